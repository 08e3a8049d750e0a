"""Faults against a run's guarantees: each unit runs once, nothing is lost, results do not
change.

A small demo grid (5 staged text encoders, 10 head jobs on text and MFCCs) runs once
uninterrupted as the reference, then in a fresh folder under each fault. Every scenario
shares one warm cache (tokenizer, demo corpus, features), so results are comparable. Per
scenario, from the run folder and its ``work.log`` (audited by ``emoplug.train.work_log``):
jobs lost (no ``done`` result at the end), units started twice (a start after an earlier
attempt by a process that was neither stopped nor dead: see that module), units whose result
was discarded (computed under a lease lost meanwhile, not written) and jobs whose
``predictions.csv`` differs from the reference. Target: 0 lost, 0 started twice, 0 different
in every row; a discarded result is counted, not a fault (it is what a frozen owner that
wakes up must do).

    python benchmarks/faults.py [--seed 0] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

from emoplug.train import work_log

RECIPE = """
name: faults
dataset: {type: demo, utterances_per_speaker: 6}
protocol: {type: loso}
seeds: [0]
train: {epochs: 3, batch_size: 8, lr: 3.0e-3, patience: 3}
text:
  bert: {type: bert, tiny: true, mode: staged, lr: 1.0e-3, tiny_hidden: 16, tiny_layers: 1}
audio:
  mfcc: {type: mfcc, n_mfcc: 13, hop_ms: 20, encoder: {hidden: 16, stride: 2}}
fusion:
  early: {type: early, hidden: 16}
grid: {text: [bert], audio: [mfcc, null], fusion: [early], approach: [direct]}
"""
WORK = _common.WORK / "faults"
KILLS = 5
RAY = ("--executor", "ray")


def launch(recipe: Path, out: Path, *args: str, env: dict[str, str] | None = None,
           **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emoplug", "run", str(recipe), "--output",
                             str(out), "-q", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                            **kwargs)


def finish(recipe: Path, out: Path) -> None:
    """Resume to the end in the foreground."""
    launch(recipe, out).wait()


def starts(out: Path) -> list[work_log.WorkEvent]:
    return [e for e in work_log.read(out) if e.event == "start"]


def started(out: Path) -> bool:
    return bool(starts(out))


def wait_for(condition, seconds: float = 300.0) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.1)


def predictions(out: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in out.glob("jobs/*/predictions.csv")
            if _done(p.parent)}


def _done(folder: Path) -> bool:
    from emoplug.files import read_json

    return (read_json(folder / "result.json") or {}).get("status") == "done"


def score(out: Path, reference: dict[str, str], seconds: float) -> dict[str, Any]:
    """Jobs lost, units started twice, units discarded, jobs differing from the reference
    (every process of the scenario has exited by now)."""
    found = predictions(out)
    audit = work_log.audit(work_log.read(out))
    return {"jobs_lost": len(set(reference) - set(found)),
            "units_started_twice": len(audit.started_twice),
            "units_discarded": len(audit.discarded),
            "jobs_different": sum(1 for job, text in found.items()
                                  if reference.get(job) != text),
            "units_ended": sum(audit.ended.values()), "seconds": round(seconds, 1)}


def kill_at_random_moments(recipe: Path, out: Path, rng: random.Random,
                           span: float) -> dict[str, Any]:
    """``--workers 2`` killed with SIGKILL (the main process) ``KILLS`` times, each at a
    seeded random moment of its relaunch, then resumed to the end."""
    moments = [round(rng.uniform(0.2, 0.8) * span, 1) for _ in range(KILLS)]
    for moment in moments:
        proc = launch(recipe, out, "--workers", "2")
        time.sleep(moment)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finish(recipe, out)
    return {"kill_after_s": moments}


def two_launches(recipe: Path, out: Path) -> dict[str, Any]:
    """Two launches from separate shells, started together."""
    procs = [launch(recipe, out) for _ in range(2)]
    return {"exit_codes": [p.wait() for p in procs]}


def restart_beside_orphan(recipe: Path, out: Path) -> dict[str, Any]:
    """A launch left running by a shell that has exited (an orphan), and a restart of the
    same command while it works."""
    shell = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m emoplug run {recipe} --output {out} -q "
                       ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
    orphan = int(shell.stdout.strip())
    wait_for(lambda: started(out))
    finish(recipe, out)
    while Path(f"/proc/{orphan}").exists() and _state(orphan) not in ("Z", "X"):
        time.sleep(0.2)
    return {"orphan_pid": orphan}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def killed_owner(recipe: Path, out: Path) -> dict[str, Any]:
    """A launch killed (SIGKILL) while it holds leases; the next launch takes them over (its
    owner is a dead process on this host)."""
    proc = launch(recipe, out)
    wait_for(lambda: started(out))
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    held = len(list((out / "leases").glob("*.json")))
    finish(recipe, out)
    return {"leases_left_by_the_killed_owner": held}


def hung_owner(recipe: Path, out: Path) -> dict[str, Any]:
    """A launch with ``EMOPLUG_LEASE_TIMEOUT=5`` frozen (SIGSTOP) while it holds leases, as
    a node that stopped answering: its heartbeat stops, and a launch with the default
    timeout takes the units over after the frozen owner's 5 s; the frozen launch is killed
    afterwards."""
    proc = launch(recipe, out, env={"EMOPLUG_LEASE_TIMEOUT": "5"})
    wait_for(lambda: started(out))
    time.sleep(1.0)
    proc.send_signal(signal.SIGSTOP)
    held = len(list((out / "leases").glob("*.json")))
    launch(recipe, out).wait()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"leases_held_by_the_frozen_owner": held, "owner_lease_timeout_s": 5}


def stalled_owner_resumed(recipe: Path, out: Path) -> dict[str, Any]:
    """A launch with ``EMOPLUG_LEASE_TIMEOUT=5`` stalled (SIGSTOP) while it holds leases;
    a second launch takes its units over after 5 s, and once it has started one of them the
    stalled launch is resumed (SIGCONT): it must give those units up (its results
    discarded, nothing written) and both launches run to the end."""
    owner = launch(recipe, out, env={"EMOPLUG_LEASE_TIMEOUT": "5"})
    wait_for(lambda: started(out))
    time.sleep(1.0)
    owner.send_signal(signal.SIGSTOP)
    stalled_at = time.perf_counter()
    frozen = {e.unit for e in starts(out) if e.process.endswith(f":{owner.pid}")}
    taker = launch(recipe, out)
    wait_for(lambda: any(e.unit in frozen and not e.process.endswith(f":{owner.pid}")
                         for e in starts(out)) or taker.poll() is not None)
    stalled_s = time.perf_counter() - stalled_at
    owner.send_signal(signal.SIGCONT)
    return {"owner_lease_timeout_s": 5, "stalled_s": round(stalled_s, 1),
            "exit_codes": [owner.wait(), taker.wait()]}


def different_timeouts(recipe: Path, out: Path) -> dict[str, Any]:
    """Two live launches, the first with the default lease timeout (60 s), the second with
    ``EMOPLUG_LEASE_TIMEOUT=3`` a second after the first started a unit: staleness is judged
    by each lease's own recorded timeout, so neither takes the other's live units."""
    first = launch(recipe, out)
    wait_for(lambda: started(out))
    time.sleep(1.0)
    second = launch(recipe, out, env={"EMOPLUG_LEASE_TIMEOUT": "3"})
    return {"lease_timeouts_s": [60, 3], "exit_codes": [first.wait(), second.wait()]}


def on_ray(recipe: Path, out: Path) -> dict[str, Any]:
    """``--executor ray`` on a local cluster (all cores), uninterrupted."""
    return {"exit_code": launch(recipe, out, *RAY).wait()}


def ray_worker_killed(recipe: Path, out: Path) -> dict[str, Any]:
    """``--executor ray``: the Ray worker running the first head job killed (SIGKILL) once
    it logged its start; Ray runs the job again on another worker."""
    proc = launch(recipe, out, *RAY)

    def first_job_start() -> work_log.WorkEvent | None:
        return next((e for e in starts(out) if not e.unit.startswith("stage-")), None)

    wait_for(lambda: first_job_start() is not None or proc.poll() is not None)
    event = first_job_start()
    if event is not None:
        os.kill(int(event.process.rsplit(":", 1)[1]), signal.SIGKILL)
    return {"killed_unit": event and event.unit, "exit_code": proc.wait()}


def ray_driver_interrupted(recipe: Path, out: Path) -> dict[str, Any]:
    """``--executor ray`` stopped by SIGINT (Ctrl-C) a second after its first unit started
    (running tasks cancelled, their attempts logged as abandoned), then run again."""
    proc = launch(recipe, out, *RAY)
    wait_for(lambda: started(out) or proc.poll() is not None)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stopped = proc.wait()
    return {"exit_code_stopped": stopped, "exit_code_resumed": launch(recipe, out, *RAY).wait()}


def ray_beside_local(recipe: Path, out: Path) -> dict[str, Any]:
    """An ``--executor ray`` launch and a local launch on the same folder at once: the
    leases share the units between them."""
    procs = [launch(recipe, out, *RAY), launch(recipe, out)]
    return {"exit_codes": [p.wait() for p in procs]}


def corrupted_inputs(recipe: Path, out: Path, cache: Path, rng: random.Random
                     ) -> dict[str, Any]:
    """Three feature cache entries and three demo WAVs overwritten with garbage, then a run:
    the cache entries are detected and recomputed; the demo corpus is regenerated."""
    entries = sorted(p for p in cache.glob("mfcc-*/*/*.npy"))
    wavs = sorted(cache.glob("demo/*/wav/**/*.wav"))
    chosen = rng.sample(entries, 3) + rng.sample(wavs, 3)
    for path in chosen:
        path.write_bytes(b"not what it was" * 10)
    finish(recipe, out)
    return {"corrupted": [str(p.relative_to(cache)) for p in chosen]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    _common.offline()
    rng = random.Random(args.seed)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    cache = WORK / "cache"

    def recipe_with(cache_dir: Path) -> Path:
        path = WORK / f"recipe-{cache_dir.name}.yaml"
        path.write_text(RECIPE + f"cache_dir: {cache_dir}\n")
        return path

    recipe = recipe_with(cache)
    finish(recipe, WORK / "warm")  # the shared warm cache
    started_at = time.perf_counter()
    finish(recipe, WORK / "reference")
    span = time.perf_counter() - started_at
    reference = predictions(WORK / "reference")
    rows = {"reference (uninterrupted)": score(WORK / "reference", reference, span)}
    scenarios = {
        "kill -9 at 5 seeded random moments, then resume":
            lambda out: kill_at_random_moments(recipe, out, rng, span),
        "two concurrent launches": lambda out: two_launches(recipe, out),
        "restart while an orphan launch is alive": lambda out: restart_beside_orphan(recipe,
                                                                                     out),
        "killed lease owner taken over": lambda out: killed_owner(recipe, out),
        "hung lease owner taken over (heartbeat timeout)": lambda out: hung_owner(recipe, out),
        "stalled (SIGSTOP) lease owner resumed after the takeover":
            lambda out: stalled_owner_resumed(recipe, out),
        "two live launches with different lease timeouts (60 s, 3 s)":
            lambda out: different_timeouts(recipe, out),
        "ray: uninterrupted (local cluster)": lambda out: on_ray(recipe, out),
        "ray: the worker running a job killed (SIGKILL), retried":
            lambda out: ray_worker_killed(recipe, out),
        "ray: the driver stopped (SIGINT) mid-run, then run again":
            lambda out: ray_driver_interrupted(recipe, out),
        "ray and a local launch on one folder at once": lambda out: ray_beside_local(recipe, out),
    }
    for name, scenario in scenarios.items():
        out = WORK / f"run-{len(rows)}"
        began = time.perf_counter()
        detail = scenario(out)
        rows[name] = {**score(out, reference, time.perf_counter() - began), **detail}
        print(name, {k: rows[name][k] for k in ("jobs_lost", "units_started_twice",
                                                 "units_discarded", "jobs_different")},
              flush=True)
    damaged = WORK / "damaged-cache"
    shutil.copytree(cache, damaged)
    out = WORK / "run-corrupted"
    began = time.perf_counter()
    detail = corrupted_inputs(recipe_with(damaged), out, damaged, rng)
    rows["corrupted cache entries and WAVs"] = {
        **score(out, reference, time.perf_counter() - began), **detail}
    meets = all(r["jobs_lost"] == r["units_started_twice"] == r["jobs_different"] == 0
                for r in rows.values())
    _common.write_report(
        "faults", args.out, machine=_common.machine(),
        settings={"recipe": RECIPE.strip(), "jobs": len(reference), "stages": 5,
                  "seed": args.seed, "kills": KILLS,
                  "compared": "predictions.csv of every job, byte for byte",
                  "started_twice": "emoplug.train.work_log.audit of work.log: a start after "
                                   "an attempt by a process neither stopped nor dead",
                  "discarded": "units with a discard line in work.log (a result computed "
                               "under a lost lease, not written)"},
        target={"jobs_lost": 0, "units_started_twice": 0, "jobs_different": 0},
        meets_target=meets, results=rows)


if __name__ == "__main__":
    main()
