"""Head jobs trained as cohorts (``train.cohort: 16``, the default) vs one at a time
(``train.cohort: 1``): wall time of the same staged head jobs, and whether every job's
predictions are the same both ways.

The staged grid of ``grid.py`` (its settings and demo corpus); the text stages are run
first and kept, then the head jobs of every fold run again and again into fresh folders,
alternating the two settings so that other work on the machine slows both alike.

    python benchmarks/cohort.py [--repeats 5] [--out benchmarks/results/cohort.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import _common
import grid

SETTINGS = {"cohort": 16, "one_at_a_time": 1}


def benchmark(settings: grid.GridSettings, repeats: int, work: Path) -> dict[str, Any]:
    """Seconds per pass over the head jobs for each setting, and a prediction check."""
    from emoplug.recipe import build_plan
    from emoplug.train.runner import run_plan

    shutil.rmtree(work, ignore_errors=True)
    recipe = grid.recipe("staged", settings, work / "cache")
    plans = {}
    for name, size in SETTINGS.items():
        plans[name] = build_plan({**recipe, "train": {**recipe["train"], "cohort": size}},
                                 f"cohort-{name}")
    stages = work / "stages-run"
    run_plan(plans["cohort"], stages, verbosity=-1)  # features, stages and a warm process
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    sizes: dict[str, dict[int, int]] = {}
    for _ in range(repeats):
        for name, plan in plans.items():
            out = work / name
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(stages / "stages", out / "stages")
            start = time.perf_counter()
            summary = run_plan(plan, out, verbosity=-1)
            seconds[name].append(round(time.perf_counter() - start, 3))
            if summary.failed or len(summary.done) != len(plan.jobs):
                raise RuntimeError(f"{name}: {len(summary.failed)} jobs failed")
            counts: dict[int, int] = {}
            for path in out.glob("jobs/*/result.json"):
                size = json.loads(path.read_text())["cohort"]
                counts[size] = counts.get(size, 0) + 1
            sizes[name] = dict(sorted(counts.items()))
    identical = all(
        (work / "cohort" / "jobs" / job.id / "predictions.csv").read_bytes()
        == (work / "one_at_a_time" / "jobs" / job.id / "predictions.csv").read_bytes()
        for job in plans["cohort"].jobs)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    paired = [round(alone / together, 3) for together, alone
              in zip(seconds["cohort"], seconds["one_at_a_time"], strict=True)]
    return {"jobs": len(plans["cohort"].jobs), "seconds": seconds, "median_seconds": median,
            "cohort_sizes": sizes,
            "speedup_cohort_vs_one_at_a_time": round(median["one_at_a_time"]
                                                     / median["cohort"], 3),
            "speedup_per_repeat": paired, "median_speedup_per_repeat": statistics.median(paired),
            "identical_predictions": identical}


def main() -> None:
    _common.offline()
    threads = _common.single_thread()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="default benchmarks/results/cohort.json")
    args = parser.parse_args()
    settings = grid.GridSettings()
    machine = _common.machine()
    loads = [_common.load_average()]
    figures = benchmark(settings, args.repeats, _common.WORK / "cohort")
    loads.append(_common.load_average())
    for name, values in figures["seconds"].items():
        print(f"{name:14s} median {figures['median_seconds'][name]:6.2f} s  {values}")
    print(f"cohorts are {figures['speedup_cohort_vs_one_at_a_time']:.2f}x faster for "
          f"{figures['jobs']} head jobs (median of medians; per repeat "
          f"{figures['speedup_per_repeat']}); predictions identical: "
          f"{figures['identical_predictions']}")
    _common.write_report(
        "cohort", args.out, machine={**machine, "load_average_during": loads},
        settings={"grid": "grid.py's staged grid", "repeats": args.repeats,
                  "torch_threads": threads},
        results=figures)


if __name__ == "__main__":
    main()
