"""Fingerprint a run, or compare two fingerprints: the check that a refactoring kept behaviour.

``record`` runs ``emoplug run RECIPE [overrides] --workers N`` with the ``emoplug`` the
interpreter imports (point ``PYTHONPATH`` at another source tree to fingerprint that one)
and writes, for every job of the plan, its id, status, dev and test metrics, best epoch and
the SHA-256 of its ``predictions.csv``. ``compare`` reads two fingerprints and writes how
many jobs are missing, extra or different (the target: 0, 0, 0).

Run both on one warm cache (``cache_dir=``): the tiny encoders' tokenizer is part of it.

    python benchmarks/run_fingerprint.py record --out A.json [--workers 2] RECIPE [KEY=VALUE...]
    python benchmarks/run_fingerprint.py compare A.json B.json --out RESULT.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common


def record(recipe: str, overrides: list[str], workers: int) -> dict[str, Any]:
    """Run the recipe into a temporary folder; return every job's fingerprint."""
    out = Path(tempfile.mkdtemp(prefix="fingerprint-"))
    try:
        command = [sys.executable, "-m", "emoplug", "run", recipe, *overrides,
                   "--output", str(out), "--workers", str(workers), "-q"]
        subprocess.run(command, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        plan = json.loads((out / "plan.json").read_text())
        jobs = {}
        for entry in plan["jobs"]:
            folder = out / "jobs" / entry["id"]
            result = json.loads((folder / "result.json").read_text())
            predictions = folder / "predictions.csv"
            jobs[entry["id"]] = {
                "status": result["status"],
                "dev": result.get("metrics", {}).get("dev"),
                "test": result.get("metrics", {}).get("test"),
                "best_epoch": result.get("best_epoch"),
                "predictions_sha256": (hashlib.sha256(predictions.read_bytes()).hexdigest()
                                       if predictions.exists() else None)}
        return {"command": " ".join(command[1:]), "jobs": jobs}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Jobs missing from ``after``, extra in it, and present in both but different."""
    a, b = before["jobs"], after["jobs"]
    different = sorted(j for j in set(a) & set(b) if a[j] != b[j])
    return {"jobs_before": len(a), "jobs_after": len(b),
            "missing": sorted(set(a) - set(b)), "extra": sorted(set(b) - set(a)),
            "different": different,
            "identical": not (set(a) ^ set(b)) and not different}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--workers", type=int, default=2)
    rec.add_argument("recipe")
    rec.add_argument("overrides", nargs="*")
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    cmp.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    _common.offline()
    if args.command == "record":
        payload = record(args.recipe, args.overrides, args.workers)
    else:
        payload = {**compare(json.loads(args.before.read_text()),
                             json.loads(args.after.read_text())),
                   "before": json.loads(args.before.read_text())["command"],
                   "after": json.loads(args.after.read_text())["command"]}
        print(f"missing {len(payload['missing'])}, extra {len(payload['extra'])}, "
              f"different {len(payload['different'])} of {payload['jobs_before']} jobs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
