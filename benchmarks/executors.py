"""Executor overhead: the quickstart grid run whole by ``emoplug run`` in-process, with
``--workers 2``, with ``--executor ray`` on a fresh local cluster (2 CPUs) and joining a Ray
cluster already started (``ray start --head --num-cpus 2`` before the command, not timed;
``--address auto``).

Each variant is the whole command in a fresh run folder over one warm feature cache, run
``--repeats`` times interleaved; its median wall time and ratio to in-process are
reported, and Ray's overhead per unit: its extra wall time over ``--workers 2`` (the local
executor with the same two processes) divided by the units (jobs and stages). Epochs are
cut (``train.epochs`` override, default 2) so the same 205 jobs and 15 stages run with less
training in each: the figures measure the executors, not the models.
The predictions of every variant are compared with in-process, byte for byte.

    python benchmarks/executors.py [--epochs 2] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common

RECIPE = _common.ROOT / "recipes" / "quickstart.yaml"
WORK = _common.WORK / "executors"


def emoplug_run(out: Path, epochs: int, *args: str) -> float:
    """Seconds of one whole ``emoplug run`` command (it must succeed)."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emoplug", "run", str(RECIPE), f"train.epochs={epochs}",
                    "--output", str(out), "-q", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def ray_cluster(*args: str) -> None:
    """``ray start``/``ray stop`` (not timed)."""
    subprocess.run(["ray", *args], check=args[0] == "start", stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def predictions(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in out.glob("jobs/*/predictions.csv")}


def units(out: Path) -> tuple[int, int]:
    return len(list(out.glob("jobs/*/result.json"))), len(list(out.glob("stages/*/stage.json")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    _common.offline()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.environ["EMOPLUG_CACHE"] = str(WORK / "cache")
    emoplug_run(WORK / "warm", args.epochs)  # features, tokenizers, demo corpus: cached
    variants = {"in-process": (), "--workers 2": ("--workers", "2"),
                "--executor ray (fresh local cluster)": ("--executor", "ray"),
                "--executor ray --address auto (cluster already started)":
                    ("--executor", "ray", "--address", "auto")}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):  # interleaved: a load spike hits every variant
        for i, (name, extra) in enumerate(variants.items()):
            out = WORK / f"run-{i}-{repeat}"
            if "auto" not in name:
                runs[name].append(emoplug_run(out, args.epochs, *extra))
                continue
            ray_cluster("start", "--head", "--num-cpus", "2", "--include-dashboard=false")
            try:
                runs[name].append(emoplug_run(out, args.epochs, *extra))
            finally:
                ray_cluster("stop", "--force")
    seconds = {name: _common.median(walls) for name, walls in runs.items()}
    reference = predictions(WORK / "run-0-0")
    jobs, stages = units(WORK / "run-0-0")
    rows = {}
    for i, (name, wall) in enumerate(seconds.items()):
        found = predictions(WORK / f"run-{i}-0")
        rows[name] = {"wall_s_median": round(wall, 1),
                      "wall_s_runs": [round(w, 1) for w in runs[name]],
                      "ratio_to_in_process": round(wall / seconds["in-process"], 2),
                      "jobs_differing_from_in_process": sum(
                          1 for job, data in reference.items() if found.get(job) != data),
                      "jobs_missing": len(set(reference) - set(found))}
        if "ray" in name:  # against the local executor with the same parallelism
            rows[name]["overhead_ms_per_unit_over_workers_2"] = round(
                1000 * (wall - seconds["--workers 2"]) / (jobs + stages))
    _common.write_report(
        "executors", args.out, machine=_common.machine(),
        settings={"recipe": "recipes/quickstart.yaml", "repeats": args.repeats,
                  "statistic": "median of the repeats, run interleaved",
                  "overrides": [f"train.epochs={args.epochs}"],
                  "jobs": jobs, "stages": stages, "cache": "warm (features, tokenizers)",
                  "ray_cpus": 2, "threads_per_process": 1,
                  "caveat": "Synthetic demo corpus with tiny models: the figures measure the "
                            "executors' overhead, not a model's quality or a real study's time."},
        results=rows)


if __name__ == "__main__":
    main()
