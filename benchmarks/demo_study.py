"""Run a study recipe on the embedded demo corpus and commit its figures: the numbers the README
and the docs quote about the demo come from the JSON this script writes.

It runs ``emoplug run RECIPE --workers N`` (a subprocess, timed) into ``benchmarks/_work/``,
then reads the run folder the way ``emoplug report`` does and records, for every cell, test
WA/UA/macro-F1 as mean ± std over folds (n = folds), its dev UA, the best cell per modality
chosen on dev UA, the majority-class floors, and the report's comparison tables (learning
control, staged vs end-to-end, one-setting comparisons, direct vs two-stage, modality).
Where the recipe has linear baselines (an audio cell whose encoder is ``linear``), each other
audio-only cell with the same approach on the same features (the featurizer's settings, its
level, encoder and CMVN aside) is set beside the baseline: the fold-level paired difference in
test UA with its 95% interval (the report's t-test, corrected).

The demo corpus is synthetic: these figures show that the machinery works (training learns,
the control does not), not how well a model recognises human emotion.

    python benchmarks/demo_study.py [--recipe recipes/quickstart.yaml] [--workers 2]
                                    [--cold] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

#: report sections whose tables the JSON keeps
SECTIONS = ("results", "protocol", "control", "modality", "approach", "staged", "settings")
CAVEAT = ("Synthetic demo corpus: the figures show that the machinery works, not how well a "
          "model recognises human emotion.")


def run_recipe(recipe: Path, out: Path, cache: Path, workers: int,
               overrides: list[str] = (), resume: bool = False) -> float:
    """``emoplug run`` into ``out`` (emptied first unless ``resume``); returns its wall time
    in seconds."""
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "emoplug", "run", str(recipe), *overrides,
               f"cache_dir={cache}",
               "--output", str(out), "--workers", str(workers), "-q"]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                             "TRANSFORMERS_OFFLINE": "1"})
    return time.perf_counter() - start


def _summary(summary: Any) -> dict[str, float | int | None]:
    def number(value: float) -> float | None:
        return None if value != value else round(value, 4)  # nan -> None

    return {"mean": number(summary.mean), "std": number(summary.std), "n": summary.n}


def baseline_comparisons(run: Any) -> list[dict[str, Any]]:
    """Each audio-only cell beside the linear baseline of the same features and approach:
    test UA of both, and their fold-level paired difference (cell − baseline)."""
    from emoplug.report.comparisons import paired_cells

    def audio(cell: Any) -> dict[str, Any] | None:
        return cell.configs.get("audio") if cell.modalities == ("audio",) else None

    def encoder_type(cell: Any) -> str | None:
        return ((audio(cell) or {}).get("encoder") or {}).get("type")

    def features(cell: Any) -> str:
        """The featurizer's settings but its level, encoder and CMVN, and the approach."""
        import json

        settings = {k: v for k, v in audio(cell).items() if k not in ("level", "encoder", "cmvn")}
        return json.dumps([settings, cell.names["approach"]], sort_keys=True)

    baselines = {features(c): c for c in run.cells
                 if encoder_type(c) == "linear" and c.done and not c.control}
    rows = []
    for cell in run.cells:
        config = audio(cell)
        if config is None or encoder_type(cell) == "linear" or cell.control or not cell.done:
            continue
        baseline = baselines.get(features(cell))
        if baseline is None:
            continue
        test = paired_cells(run, cell, baseline, "ua")

        def number(value: float) -> float | None:
            return None if value != value else round(value, 4)

        rows.append({"cell": cell.label, "baseline": baseline.label, "n_folds": test.n,
                     "cell_ua": number(test.mean_a), "baseline_ua": number(test.mean_b),
                     "difference": number(test.mean_diff),
                     "ci95": [number(test.ci_low), number(test.ci_high)],
                     "t_test_p_corrected": number(test.t_p),
                     "beats_baseline": bool(test.ci_low > 0) if test.ci_low == test.ci_low
                     else None})
    return rows


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The figures of a finished run folder (see the module docstring)."""
    from emoplug.report.collect import load_run
    from emoplug.report.comparisons import MODALITY_GROUPS
    from emoplug.report.sections import build_report
    from emoplug.report.select import (
        best,
        cell_summary,
        comparable,
        floor_summary,
        fold_floors,
        reference_protocol,
    )

    run = load_run(run_dir)
    cells = {}
    for cell in run.cells:
        cells[cell.label] = {
            "jobs_done": len(cell.done), "jobs_planned": cell.planned, "control": cell.control,
            **{f"test_{m}": _summary(cell_summary(cell, m)) for m in ("wa", "ua", "macro_f1")},
            "dev_ua": _summary(cell_summary(cell, "ua", "dev")),
        }
    chosen = {}
    for modalities, title in MODALITY_GROUPS:
        winner = best(c for c in comparable(run) if c.modalities == modalities)
        if winner is not None:
            chosen[title] = {"cell": winner.label,
                             "dev_ua": _summary(cell_summary(winner, "ua", "dev")),
                             "test_ua": _summary(cell_summary(winner, "ua"))}
    floors = fold_floors(run, reference_protocol(run))
    report = build_report(run)
    tables = {s.key: [{"caption": t.caption, "columns": t.columns, "rows": t.rows}
                      for t in s.tables] for s in report.sections if s.key in SECTIONS}
    return {
        "caveat": CAVEAT,
        "jobs": {"planned": sum(c.planned for c in run.cells), "done": run.count("done"),
                 "failed": run.count("failed")},
        "best_chosen_on_dev_ua": chosen,
        "majority_floor": {
            "per_fold": [{"fold": f.fold, "majority": f.majority, "test_size": f.test_size,
                          **{k: round(v, 4) for k, v in f.scores.items()}} for f in floors],
            "ua": _summary(floor_summary(floors, "ua")),
            "wa": _summary(floor_summary(floors, "wa"))},
        "cells": cells,
        "deep_vs_linear_baseline": baseline_comparisons(run),
        "report_tables": tables,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path,
                        default=_common.ROOT / "recipes" / "quickstart.yaml")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cold", action="store_true", help="start from an empty cache")
    parser.add_argument("--resume", action="store_true",
                        help="keep the jobs an earlier (interrupted) run of it finished; the "
                             "wall time then covers the rest only")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/<recipe>.json)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides, e.g. dataset={type:demo}")
    args = parser.parse_args()
    _common.offline()
    recipe = args.recipe.resolve()
    name = recipe.stem
    run_dir, cache = _common.WORK / "demo_study" / name, _common.WORK / "demo_study" / "cache"
    if args.cold:
        shutil.rmtree(cache, ignore_errors=True)
    seconds = run_recipe(recipe, run_dir, cache, args.workers, args.overrides, args.resume)
    figures = summarize_run(run_dir)
    for title, chosen in figures["best_chosen_on_dev_ua"].items():
        print(f"{title:13s} {chosen['cell']:45s} dev UA {chosen['dev_ua']['mean']:.3f}  "
              f"test UA {chosen['test_ua']['mean']:.3f} ± {chosen['test_ua']['std']:.3f}")
    print(f"majority floor UA {figures['majority_floor']['ua']['mean']:.3f}; "
          f"{seconds:.1f} s with {args.workers} workers")
    _common.write_report(f"{name}", args.out,
                         settings={"recipe": os.path.relpath(recipe, _common.ROOT),
                                   "overrides": args.overrides, "resumed": args.resume,
                                   "workers": args.workers, "cold_cache": args.cold},
                         results={"wall_s": round(seconds, 1), **figures})


if __name__ == "__main__":
    main()
