"""Several processes on one run folder, end to end in subprocesses: concurrent launches run
each unit once, signals stop every worker, and the console tells the whole run's truth."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emoplug.recipe import load_plan
from emoplug.train import work_log
from emoplug.train.runner import run_plan

# 5 staged encoders (one per fold) and 5 head jobs on them: every unit kind, no featurizing
SMALL = """
name: small
dataset: {type: demo, utterances_per_speaker: 6}
protocol: {type: loso}
seeds: [0]
train: {epochs: 2, batch_size: 16, lr: 3.0e-3, patience: 1}
text:
  bert: {type: bert, tiny: true, mode: staged, lr: 1.0e-3, tiny_hidden: 16, tiny_layers: 1}
fusion:
  early: {type: early, hidden: 16}
grid: {text: [bert], fusion: [early], approach: [direct]}
"""


def write(folder: Path, text: str = SMALL, cache: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "r.yaml"
    path.write_text(text + f"cache_dir: {cache or folder / 'cache'}\n")
    return path


def start(recipe: Path, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emoplug", "run", str(recipe), "--output",
                             str(out), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def started(out: Path) -> bool:
    return any(e.event == "start" for e in work_log.read(out))


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_until(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def ua(out: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["metrics"]["test"]["ua"]
            for p in out.glob("jobs/*/result.json")}


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A warm cache (tiny model, corpus) and the uninterrupted run's results."""
    tmp = tmp_path_factory.mktemp("warm")
    recipe = write(tmp)
    summary = run_plan(load_plan(recipe), tmp / "out", verbosity=-1)
    assert len(summary.done) == 5
    return tmp / "cache", ua(tmp / "out")


def fresh(tmp_path: Path, warm, text: str = SMALL) -> Path:
    shutil.copytree(warm[0], tmp_path / "cache")
    return write(tmp_path, text)


@pytest.mark.slow
def test_two_launches_on_one_folder_run_each_unit_once(tmp_path, warm):
    recipe = fresh(tmp_path, warm)
    out = tmp_path / "out"
    first = start(recipe, out)
    assert wait_until(lambda: started(out), 120)
    second = start(recipe, out)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    # each unit started once and ended once, none discarded
    found = work_log.audit(work_log.read(out))
    assert len(found.started) == 10 and not found.started_twice and not found.discarded
    assert set(found.ended.values()) == {1}, found
    assert ua(out) == warm[1]
    threads = {json.loads(p.read_text())["threads"] for p in out.glob("jobs/*/result.json")}
    assert threads == {1}  # one thread per process on a CPU, by default
    helping = [line for line in outputs[1][1].splitlines() if "held by another" in line]
    assert len(helping) == 1 and "helping with the rest" in helping[0]
    assert not list((out / "leases").glob("*.json"))  # finished units' leases are gone


LONG = SMALL.replace("epochs: 2, batch_size: 16, lr: 3.0e-3, patience: 1",
                     "epochs: 400, batch_size: 4, lr: 3.0e-3, patience: 400")


def _two_workers_busy(tmp_path: Path, warm) -> tuple[subprocess.Popen, Path, list[int]]:
    recipe = fresh(tmp_path, warm, LONG)
    out = tmp_path / "out"
    main = start(recipe, out, "--workers", "2")

    def pids() -> set[int]:
        return {int(e.process.split(":")[1]) for e in work_log.read(out) if e.event == "start"}

    assert wait_until(lambda: len(pids()) == 2, 180), main.stderr and work_log.read(out)
    return main, out, sorted(pids())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_main_process_stops_every_worker(tmp_path, warm, signum):
    main, out, pids = _two_workers_busy(tmp_path, warm)
    main.send_signal(signum)
    main.communicate(timeout=30)
    assert main.returncode == 128 + signum
    # today the worker went on training as an orphan (SIGTERM), or both ran on for 30 s
    assert wait_until(lambda: not any(running(p) for p in pids), 15), pids
    assert not list((out / "leases").glob("*.json"))  # released on the way out
    for path in out.glob("jobs/*/result.json"):  # nothing half-written
        json.loads(path.read_text())
    # work.log closes every start: an end, or an abandon that names the stop signal
    events = work_log.read(out)
    closing = {(e.process, e.unit): e for e in events if e.event in ("end", "abandon")}
    starts = {(e.process, e.unit) for e in events if e.event == "start"}
    assert starts <= set(closing), (starts, closing)
    abandoned = {e.details["why"] for e in closing.values() if e.event == "abandon"}
    assert abandoned and abandoned <= {"SIGTERM", "SIGINT"}, abandoned


@pytest.mark.slow
def test_a_second_sigint_ends_everything_at_once(tmp_path, warm):
    main, out, pids = _two_workers_busy(tmp_path, warm)
    main.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two signals at once may reach Python as one
    main.send_signal(signal.SIGINT)
    main.communicate(timeout=10)
    assert wait_until(lambda: not any(running(p) for p in pids), 5), pids


@pytest.mark.slow
def test_a_worker_stops_when_its_main_process_is_killed(tmp_path, warm):
    main, out, pids = _two_workers_busy(tmp_path, warm)
    main.send_signal(signal.SIGKILL)
    main.communicate(timeout=10)
    worker = [p for p in pids if p != main.pid]
    assert worker and wait_until(lambda: not running(worker[0]), 15), worker


# every stage diverges, so every job fails: 5 stage failures and 5 job failures
FAILING = SMALL.replace("lr: 3.0e-3", "lr: 1.0e+30")


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_failure_is_shown_once_with_one_summary(tmp_path, warm, workers):
    recipe = fresh(tmp_path, warm, FAILING)
    out = tmp_path / "out"
    proc = start(recipe, out, "-q", "--workers", workers)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    # every worker's failures reach the console once (each stage's line; the five jobs'
    # one error once, the other four counted), and one summary for the whole run
    assert len(failed) == 6 and all("TrainingDiverged" in line for line in failed), stderr
    assert len([line for line in failed if line.startswith("FAILED stage")]) == 5
    repeated = [line for line in lines if "more job(s) failed with the same error" in line]
    assert len(repeated) == 1 and repeated[0].startswith("4 more job(s)"), stderr
    summaries = [line for line in lines if line.startswith("run small:")]
    assert len(summaries) == 1 and "0 done, 5 failed" in summaries[0], stderr
    kept = (out / "failures.log").read_text().splitlines()
    assert len(kept) == 10 and all("FAILED" in line for line in kept)


def test_plan_states_the_runs_size(tmp_path):
    from click.testing import CliRunner

    from emoplug.cli import main

    result = CliRunner().invoke(main, ["plan", str(write(tmp_path))])
    assert result.exit_code == 0, result.output
    assert ("size: 0 audio feature extractions and 0 frozen text encoder passes over the "
            "corpus (cached), 5 text and speech stage fine-tunings, 5 jobs (0 fine-tune an "
            "encoder)"
            ) in result.output


def test_threads_default_to_one_per_process_on_a_cpu(monkeypatch):
    import torch

    from emoplug.train.workers import threads_per_process

    monkeypatch.delenv("EMOPLUG_THREADS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert threads_per_process(1, None) == 1  # today: every core's threads
    assert threads_per_process(1, 3) == 3
    monkeypatch.setenv("EMOPLUG_THREADS", "2")
    assert threads_per_process(4, None) == 2


def test_stages_and_jobs_show_their_batches(tmp_path, warm, monkeypatch):
    from emoplug.train.progress import Progress

    shown: list[str] = []
    monkeypatch.setattr(Progress, "postfix", lambda self, text, force=False: shown.append(text))
    summary = run_plan(load_plan(fresh(tmp_path, warm)), tmp_path / "out", verbosity=1)
    assert len(summary.done) == 5
    # today only "epoch 1/2" once an epoch had ended; now every batch of every epoch
    assert "stage bert fold=Ses01 seed=0 epoch 1/2 batch 1/3" in shown, shown[:5]
    assert "bert/none/direct fold=Ses01 seed=0 epoch 2/2 batch 3/3" in shown, shown[-5:]


def test_a_frozen_encoder_pass_shows_a_bar(tmp_path, warm, capsys):
    recipe = fresh(tmp_path, warm, SMALL.replace("mode: staged", "mode: frozen"))
    summary = run_plan(load_plan(recipe), tmp_path / "out", verbosity=1)
    assert len(summary.done) == 5
    err = capsys.readouterr().err
    assert "frozen bert:" in err and "/60 [" in err  # 60 texts; today: silent while it encodes


def test_a_run_takes_over_the_units_of_a_dead_launch(tmp_path, warm, capsys):
    """Leases left by a killed launch (its process gone) do not block the next run: their
    units are taken over at once and said so."""
    recipe = fresh(tmp_path, warm)
    out = tmp_path / "out"
    plan = load_plan(recipe)
    units = ",".join(job.id for job in plan.jobs[:2])
    code = ("import sys; from pathlib import Path; from emoplug.train.leases import Leases; "
            "leases = Leases(Path(sys.argv[1]), 'killed', 0); "
            "[leases.take(u) for u in sys.argv[2].split(',')]")
    subprocess.run([sys.executable, "-c", code, str(out), units], check=True)
    assert len(list((out / "leases").glob("*.json"))) == 2
    summary = run_plan(plan, out, verbosity=0)
    assert len(summary.done) == 5 and ua(out) == warm[1]
    assert "took over 2 units from stopped processes" in capsys.readouterr().err


def _dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _taken_by_the_dead(lease: Path, pid: int) -> None:
    """Put in ``lease``'s place the lease of a process that took it over, then died."""
    record = json.loads(lease.read_text())
    lease.write_text(json.dumps({**record, "pid": pid, "launch": "taker", "nonce": "taker"}))


def test_a_job_lost_to_a_taker_that_died_is_retried(tmp_path, warm, monkeypatch):
    """A job's lease taken over while it trained: its result is discarded, not written; the
    taker dies, and this launch retries the job (today: the run ended without it)."""
    from emoplug.train import job as job_module

    text = SMALL.replace("mode: staged", "mode: frozen").replace("patience: 1}",
                                                                 "patience: 1, cohort: 1}")
    recipe, out, dead = fresh(tmp_path, warm, text), tmp_path / "out", _dead_pid()
    real, lost = job_module.run_job, []

    def run_then_lose(ctx, job, *args, **kwargs):
        outcome = real(ctx, job, *args, **kwargs)
        if not lost:
            lost.append(job.id)
            _taken_by_the_dead(out / "leases" / f"{job.id}.json", dead)
        return outcome

    monkeypatch.setattr(job_module, "run_job", run_then_lose)
    summary = run_plan(load_plan(recipe), out, verbosity=0)
    assert len(summary.done) == 5 and lost[0] in summary.done
    events = [(e.event, e.details.get("why")) for e in work_log.read(out) if e.unit == lost[0]]
    assert events == [("start", None), ("lost", "taken"), ("discard", None), ("start", None),
                      ("end", None)]
    found = work_log.audit(work_log.read(out))
    assert found.discarded == {lost[0]} and found.ended[lost[0]] == 1


def test_a_stage_whose_lease_was_lost_writes_nothing(tmp_path, warm, monkeypatch):
    """A stage fine-tuned under a lease taken over meanwhile is not saved by this process
    (today it was); the taker dies and the stage is fine-tuned again and saved once."""
    from emoplug.train import text_stage

    recipe, out, dead = fresh(tmp_path, warm), tmp_path / "out", _dead_pid()
    real_encode, real_save, lost, saved = text_stage.encode_texts, text_stage.save_stage, [], []

    def encode_then_lose(*args, **kwargs):
        if not lost:
            lost.append(next((out / "leases").glob("stage-*.json")))
            _taken_by_the_dead(lost[0], dead)
        return real_encode(*args, **kwargs)

    def save(path, *args, **kwargs):
        saved.append(path.name)
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(text_stage, "encode_texts", encode_then_lose)
    monkeypatch.setattr(text_stage, "save_stage", save)
    summary = run_plan(load_plan(recipe), out, verbosity=0)
    assert len(summary.done) == 5 and ua(out) == warm[1]
    unit = lost[0].stem
    assert len(saved) == 5 and saved.count(unit.removeprefix("stage-")) == 1
    events = [e.event for e in work_log.read(out) if e.unit == unit]
    assert events == ["start", "lost", "discard", "start", "end"]
