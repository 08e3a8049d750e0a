"""Processes and threads of ``emoplug run`` on a CPU, on an idle and on a busy machine.

A small demo grid (10 head jobs on a frozen tiny text encoder and MFCCs, warm cache) is
run by the whole ``emoplug run`` command (start-up included) with each layout: the old
default (one process with one OpenMP thread per core), the new default (one process, one
thread) and one single-threaded worker per core. Each runs with no synthetic load and with
one busy-loop process per core beside it (the load of other users' work).

    python benchmarks/threads.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import _common

RECIPE = """
name: threads
dataset: {type: demo, utterances_per_speaker: 6}
protocol: {type: loso}
seeds: [0]
train: {epochs: 3, batch_size: 8, lr: 3.0e-3, patience: 3}
text:
  bert: {type: bert, tiny: true, mode: frozen, tiny_hidden: 16, tiny_layers: 1}
audio:
  mfcc: {type: mfcc, n_mfcc: 13, hop_ms: 20, encoder: {hidden: 16, stride: 2}}
fusion:
  early: {type: early, hidden: 16}
grid: {text: [bert, null], audio: [mfcc], fusion: [early], approach: [direct]}
"""
WORK = _common.WORK / "threads"
BUSY = "while True: pass"


def layouts(cores: int) -> dict[str, list[str]]:
    return {f"old default: 1 process x {cores} threads": ["--threads", str(cores)],
            "new default: 1 process x 1 thread": [],
            f"--workers {cores}: {cores} processes x 1 thread": ["--workers", str(cores)]}


def timed_run(recipe: str, args: list[str], name: str) -> float:
    out = WORK / name
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emoplug", "run", recipe, "--output", str(out), "-q",
                    *args], check=True, stderr=subprocess.DEVNULL)
    return round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    _common.offline()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "EMOPLUG_THREADS"):
        os.environ.pop(var, None)
    cores = os.cpu_count() or 1
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    recipe = WORK / "recipe.yaml"
    recipe.write_text(RECIPE + f"cache_dir: {WORK / 'cache'}\n")
    timed_run(str(recipe), [], "warm")  # fill the cache
    results: dict[str, dict[str, float]] = {}
    load_before = _common.load_average()
    for load in ("no synthetic load", f"{cores} busy loops"):
        busy = [] if load == "no synthetic load" else [
            subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(cores)]
        try:
            for i, (name, extra) in enumerate(layouts(cores).items()):
                seconds = timed_run(str(recipe), extra, f"run-{len(busy)}-{i}")
                results.setdefault(name, {})[load] = seconds
                print(f"{load:<14} {name:<40} {seconds:6.1f} s", flush=True)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
    _common.write_report(
        "threads", args.out, machine=_common.machine(load_average_before=load_before),
        settings={"recipe": RECIPE.strip(), "jobs": 10,
                  "timed": "the whole emoplug run command, warm cache, start-up included",
                  "synthetic_load": f"{cores} python busy loops ({BUSY!r})",
                  "note": "other users' work shared the machine too; see load_average"},
        results_s=results)


if __name__ == "__main__":
    main()
