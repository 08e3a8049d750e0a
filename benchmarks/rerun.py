"""Re-running a finished 1,000-job grid: the whole ``emoplug run`` command must skip every job
in under 10 s.

The quickstart recipe with 5 seeds plans 41 cells x 5 folds x 5 seeds = 1,025 jobs. Each job
gets a synthetic ``result.json`` saying ``done``, then ``emoplug run`` is timed as a
subprocess (interpreter start-up and imports included), ``--repeats`` times. For where the
time goes, ``emoplug --help`` (start-up alone) and, in this process, ``load_plan`` and
``run_plan`` are timed too.

    python benchmarks/rerun.py [--seeds 5] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

#: the phases of a re-run, timed in a fresh interpreter (argv: recipe, output, overrides...)
PHASES = """
import json, sys, time
marks = [("start", time.perf_counter())]
from emoplug.recipe import load_plan
marks.append(("import emoplug.recipe (pydantic, yaml, registry)", time.perf_counter()))
plan = load_plan(sys.argv[1], sys.argv[3:])
marks.append(("load_plan (plugins, validation, job ids)", time.perf_counter()))
import torch
marks.append(("import torch", time.perf_counter()))
from accelerate import Accelerator
from emoplug.train.runner import run_plan
marks.append(("import accelerate + emoplug.train.runner", time.perf_counter()))
run_plan(plan, sys.argv[2], verbosity=-1)
marks.append(("run_plan (plan.json, read every result.json)", time.perf_counter()))
print(json.dumps({b[0]: round(b[1] - a[1], 3) for a, b in zip(marks, marks[1:])}))
"""
RECIPE = _common.ROOT / "recipes" / "quickstart.yaml"
TARGET_S = 10.0


def overrides(seeds: int, cache: Path) -> list[str]:
    return [f"seeds=[{','.join(str(s) for s in range(seeds))}]", f"cache_dir={cache}"]


def finish_every_job(plan: Any, out: Path) -> int:
    """Write a minimal ``done`` result for every job of ``plan``; return the job count."""
    for job in plan.jobs:
        folder = out / "jobs" / job.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps(
            {"status": "done", "job": job.id, "cell": job.cell.id, "fold": job.fold,
             "seed": job.seed, "synthetic": True}))
    return len(plan.jobs)


def timed_command(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=_common.ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start, done


def benchmark(seeds: int, repeats: int, work: Path, phases: bool = True) -> dict[str, Any]:
    """Plan, finish, time the re-runs (and, with ``phases``, where the time goes)."""
    from emoplug.recipe import load_plan
    from emoplug.train.runner import run_plan

    shutil.rmtree(work, ignore_errors=True)
    out = work / "run"
    extra = overrides(seeds, work / "cache")
    plan = load_plan(RECIPE, extra)
    jobs = finish_every_job(plan, out)
    command = [sys.executable, "-m", "emoplug", "run", str(RECIPE), *extra,
               "--output", str(out), "-q"]
    runs = []
    for _ in range(repeats):
        seconds, done = timed_command(command)
        if done.returncode != 0:
            raise RuntimeError(f"emoplug run failed ({done.returncode}): {done.stderr}")
        runs.append(round(seconds, 3))
    summary_line = done.stderr.strip().splitlines()[-1]
    summary = run_plan(load_plan(RECIPE, extra), out, verbosity=-1)
    figures = {
        "jobs": jobs,
        "command": " ".join(Path(c).name if c == sys.executable else c for c in command),
        "seconds": runs,
        "median_s": round(_common.median(runs), 3),
        "skipped": len(summary.skipped),
        "ran": len(summary.done) + len(summary.failed),
        "summary_line": summary_line,
    }
    if phases:
        python_s, _ = timed_command([sys.executable, "-c", "pass"])
        help_s, _ = timed_command([sys.executable, "-m", "emoplug", "--help"])
        _, timed = timed_command([sys.executable, "-c", PHASES, str(RECIPE), str(out), *extra])
        figures["startup_s"] = {"python -c pass": round(python_s, 3),
                                "emoplug --help": round(help_s, 3)}
        figures["phases_s"] = json.loads(timed.stdout)
    return figures


def main() -> None:
    _common.offline()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds (200 jobs each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="default benchmarks/results/rerun.json")
    args = parser.parse_args()
    machine = _common.machine()
    figures = benchmark(args.seeds, args.repeats, _common.WORK / "rerun")
    print(f"re-running {figures['jobs']} finished jobs: median {figures['median_s']:.2f} s "
          f"(runs {figures['seconds']}; target < {TARGET_S:.0f} s); skipped "
          f"{figures['skipped']}, ran {figures['ran']}")
    for phase, seconds in figures["phases_s"].items():
        print(f"  {seconds:6.2f} s  {phase}")
    _common.write_report(
        "rerun", args.out, machine=machine,
        settings={"recipe": "recipes/quickstart.yaml", "seeds": args.seeds,
                  "repeats": args.repeats, "results": "synthetic result.json, status done"},
        target={"median_s_below": TARGET_S},
        meets_target=figures["median_s"] < TARGET_S and figures["ran"] == 0,
        results=figures)


if __name__ == "__main__":
    main()
