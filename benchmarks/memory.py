"""Memory over many jobs in one process: RSS after every job and the peak, for one
``run_plan`` over a recipe of small cells (demo corpus, tiny staged encoders, MFCC).

A plugin object registered with ``get_registry().add_plugin`` records the RSS in its
``emoplug_job_finished`` hook; a thread samples the RSS every 20 ms for the peak. Target: the
RSS after job 50 is less than 10% above the RSS after job 5.

    python benchmarks/memory.py [--seeds 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import shutil
import threading
from pathlib import Path
from typing import Any

import _common
import psutil

from emoplug import hookimpl

TARGET_GROWTH = 0.10
FIRST, LAST = 5, 50


GRID = {"text": ["bert", "roberta", None], "audio": ["mfcc", None],
        "fusion": ["early", "late", "attention"], "approach": ["direct", "two_stage"]}


def recipe(seeds: int, utterances: int, cache: Path, grid: dict[str, list] | None = None
           ) -> dict[str, Any]:
    """By default 18 cells: 2 tiny staged encoders x MFCC x 3 fusions x 2 approaches, plus
    the text-only and audio-only cells (90 jobs per seed)."""
    return {
        "name": "bench-memory",
        "dataset": {"type": "demo", "utterances_per_speaker": utterances},
        "protocol": {"type": "loso"},
        "seeds": list(range(seeds)),
        "train": {"epochs": 2, "batch_size": 16, "lr": 3.0e-3, "patience": 1},
        "cache_dir": str(cache),
        "text": {"bert": {"type": "bert", "tiny": True, "mode": "staged"},
                 "roberta": {"type": "roberta", "tiny": True, "mode": "staged"}},
        "audio": {"mfcc": {"type": "mfcc", "n_mfcc": 13, "hop_ms": 20,
                           "encoder": {"hidden": 16, "stride": 2}}},
        "fusion": {"early": {"type": "early", "hidden": 16},
                   "late": {"type": "late", "hidden": 16},
                   "attention": {"type": "attention", "dim": 16, "heads": 2, "hidden": 16},
                   "none": {"type": "none", "hidden": 16}},
        "approach": {"direct": {"type": "direct"}, "two_stage": {"type": "two_stage"}},
        "grid": grid or GRID,
    }


class RssRecorder:
    """RSS after each job (the hook) and the peak (a sampling thread), in MiB."""

    def __init__(self, interval: float = 0.02):
        self.process = psutil.Process()
        self.after_job: list[float] = []
        self.peak = self.rss()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> float:
        return self.process.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @hookimpl
    def emoplug_job_finished(self, job: Any, result: dict) -> None:
        self.after_job.append(self.rss())


def benchmark(seeds: int, utterances: int, work: Path, grid: dict[str, list] | None = None
              ) -> dict[str, Any]:
    """One ``run_plan`` with the recorder plugged in; return the RSS figures."""
    from emoplug.recipe import build_plan
    from emoplug.registry import get_registry
    from emoplug.train.runner import run_plan

    shutil.rmtree(work, ignore_errors=True)
    plan = build_plan(recipe(seeds, utterances, work / "cache", grid), "bench-memory")
    registry = get_registry()
    recorder = RssRecorder()
    registry.add_plugin(recorder, "bench-memory-rss")
    start_rss = recorder.rss()
    try:
        with recorder:
            summary = run_plan(plan, work / "run", verbosity=-1)
    finally:
        registry.remove_plugin("bench-memory-rss")
    rss = [round(v, 1) for v in recorder.after_job]
    last = min(LAST, len(rss))
    growth = rss[last - 1] / rss[FIRST - 1] - 1 if len(rss) >= FIRST else float("nan")
    return {
        "jobs": len(plan.jobs), "done": len(summary.done), "failed": len(summary.failed),
        "stages": summary.stages,
        "rss_mib_before_run": round(start_rss, 1),
        "rss_mib_after_job": rss,
        f"rss_mib_job_{FIRST}": rss[FIRST - 1] if len(rss) >= FIRST else None,
        f"rss_mib_job_{last}": rss[last - 1] if rss else None,
        "rss_mib_last_job": rss[-1] if rss else None,
        f"growth_job_{FIRST}_to_{last}": round(growth, 4),
        "peak_rss_mib": round(recorder.peak, 1),
    }


def main() -> None:
    _common.offline()
    threads = _common.single_thread()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds (90 jobs each)")
    parser.add_argument("--utterances", type=int, default=12, help="demo utterances/speaker")
    parser.add_argument("--out", default=None, help="default benchmarks/results/memory.json")
    args = parser.parse_args()
    machine = _common.machine()
    figures = benchmark(args.seeds, args.utterances, _common.WORK / "memory")
    growth = figures[f"growth_job_{FIRST}_to_{LAST}"]
    print(f"{figures['jobs']} jobs ({figures['done']} done, {figures['stages']} stages): RSS "
          f"{figures[f'rss_mib_job_{FIRST}']} MiB after job {FIRST}, "
          f"{figures[f'rss_mib_job_{LAST}']} MiB after job {LAST} ({growth:+.1%}; target < "
          f"{TARGET_GROWTH:.0%}), {figures['rss_mib_last_job']} MiB after the last; peak "
          f"{figures['peak_rss_mib']} MiB")
    _common.write_report(
        "memory", args.out, machine=machine,
        settings={"seeds": args.seeds, "utterances_per_speaker": args.utterances,
                  "cells": "bert/roberta tiny staged x mfcc x early/late/attention x "
                           "direct/two_stage, plus text-only and audio-only",
                  "torch_threads": threads, "rss": "psutil, after each job via "
                  "emoplug_job_finished; peak sampled every 20 ms"},
        target={f"growth_job_{FIRST}_to_{LAST}_below": TARGET_GROWTH},
        meets_target=growth < TARGET_GROWTH, results=figures)


if __name__ == "__main__":
    main()
