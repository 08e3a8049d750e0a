"""Project the H100-hours of the full grid (``recipes/full_grid.yaml``, staged encoders).

Units are counted from ``emoplug plan recipes/full_grid.yaml dataset.root=/any --json``:
head jobs (every planned job), text stages (encoders x folds x seeds), and feature
extraction (10,039 IEMOCAP utterances x 4 featurizers; wav2vec on the GPU, the others on
CPUs). Per-unit GPU times come from ``benchmarks/results/gpu.json`` when it holds
measurements; otherwise from assumed H100 step times (labelled as assumptions). The per-job
CPU-side overhead (setup, writing results) comes from ``grid.json``. Every epoch is assumed
to run (no early stopping), so the projection is an upper bound. Target: <= 10 H100-hours.

    python benchmarks/full_grid_cost.py [--measured FILE.json] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import _common

TARGET_HOURS = 10.0
UTTERANCES = 10039
AUDIO_HOURS = UTTERANCES * 4.46 / 3600  # IEMOCAP's mean utterance is ~4.5 s
BATCH = 32
#: used only when no GPU measurement exists: H100 bf16 step times for these sizes
#: (launch-bound at batch 32 x 22 tokens; not measured here)
ASSUMED_STEPS_S = {"encoder_train_step_s": 0.035, "encoder_eval_step_s": 0.008,
                   "head_train_step_s": 0.006, "head_eval_step_s": 0.002}
#: wav2vec2-base (95M parameters) over 225 frames vs RoBERTa-base (125M) over 22 tokens
WAV2VEC_FLOPS_RATIO = (95 * 225) / (125 * 22)


def plan_units(recipe: Path) -> dict[str, Any]:
    """Jobs, stages and epochs of the full grid, from ``emoplug plan --json``."""
    out = subprocess.run([sys.executable, "-m", "emoplug", "plan", str(recipe),
                          "dataset.root=/any", "--json"], capture_output=True, text=True,
                         check=True, cwd=_common.ROOT).stdout
    plan = json.loads(out)
    encoders = [name for name in plan["counts"]["text"] if name != "-"]
    from emoplug.recipe import read_yaml

    train = read_yaml(recipe).get("train", {})
    epochs = int(train.get("epochs", 10))
    return {"jobs": plan["jobs"], "encoders": len(encoders), "folds": len(plan["folds"]),
            "seeds": len(plan["seeds"]),
            "stages": len(encoders) * len(plan["folds"]) * len(plan["seeds"]),
            "epochs": epochs, "stage_epochs": int(train.get("stage_epochs") or epochs),
            "feature_extractions": UTTERANCES * 4}


def per_unit_seconds(measured: dict[str, Any]) -> tuple[dict[str, float], list[str], str]:
    """GPU seconds per epoch/pass of each phase, the assumptions made, and the source."""
    assumptions = []
    results = measured.get("results") or {}
    if measured.get("benchmark") == "gpu" and results.get("phases_bf16"):
        phases = {k: v for k, v in results["phases_bf16"].items() if k != "note"}
        eval_step = results["encoder_step"]["bf16"]["eval_step_s"]
        source = f"measured on {results.get('gpu')} (gpu.json)"
    else:
        steps = ASSUMED_STEPS_S
        sizes = {"train": 4400, "dev": 1100, "fold": 5500}
        n = {k: math.ceil(v / BATCH) for k, v in sizes.items()}
        phases = {
            "encoder_train_epoch_s": n["train"] * steps["encoder_train_step_s"],
            "encoder_dev_eval_s": n["dev"] * steps["encoder_eval_step_s"],
            "encoder_encode_fold_s": n["fold"] * steps["encoder_eval_step_s"],
            "head_train_epoch_s": n["train"] * steps["head_train_step_s"],
            "head_dev_eval_s": n["dev"] * steps["head_eval_step_s"],
            "head_predict_fold_s": n["fold"] * steps["head_eval_step_s"],
        }
        eval_step = steps["encoder_eval_step_s"]
        source = "ASSUMED H100 step times (no GPU measurement available)"
        assumptions.append(f"ASSUMPTION (CPU -> GPU): no gpu.json measurement, so H100 bf16 "
                           f"step times are assumed: {steps}; they are not measured")
    phases["wav2vec_per_batch_s"] = eval_step * WAV2VEC_FLOPS_RATIO
    assumptions.append(f"wav2vec2-base features: {WAV2VEC_FLOPS_RATIO:.1f}x the FLOPs of one "
                       "text-encoder inference batch per batch of 32 utterances")
    return phases, assumptions, source


def job_overhead_s(grid: dict[str, Any] | None) -> tuple[float, str]:
    """CPU-side seconds per head job outside its GPU steps: a staged demo job of grid.json
    (setup, tiny training, writing results) as an upper bound, else 1 s."""
    try:
        return float(grid["results"]["modes"]["staged"]["mean_job_s"]), \
            "measured: mean staged job of grid.json on the CPU (upper bound)"
    except (TypeError, KeyError):
        return 1.0, "ASSUMPTION: 1 s per job"


def project(units: dict[str, Any], phases: dict[str, float], overhead: float,
            featurize: dict[str, Any] | None) -> dict[str, Any]:
    """Seconds per unit and the total H100-hours (CPU feature hours reported apart)."""
    stage_s = (units["stage_epochs"] * (phases["encoder_train_epoch_s"]
                                        + phases["encoder_dev_eval_s"])
               + phases["encoder_encode_fold_s"])
    job_s = (units["epochs"] * (phases["head_train_epoch_s"] + phases["head_dev_eval_s"])
             + phases["head_predict_fold_s"] + overhead)
    wav2vec_s = math.ceil(UTTERANCES / BATCH) * phases["wav2vec_per_batch_s"]
    gpu_s = {"stages": units["stages"] * stage_s, "head_jobs": units["jobs"] * job_s,
             "wav2vec_features": wav2vec_s}
    cpu_features_h = None
    if featurize:
        per_hour = {name: r["seconds"] * 3600 / featurize["audio"]["seconds"]
                    for name, r in featurize["results"].items()}
        cpu_features_h = round(sum(per_hour.values()) * AUDIO_HOURS / 3600, 3)
    total_h = sum(gpu_s.values()) / 3600
    return {"seconds_per_stage": round(stage_s, 2), "seconds_per_head_job": round(job_s, 2),
            "gpu_hours": {k: round(v / 3600, 3) for k, v in gpu_s.items()},
            "total_h100_hours": round(total_h, 2),
            "cpu_core_hours_mfcc_spectrogram_prosodic": cpu_features_h,
            "meets_target": total_h <= TARGET_HOURS}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def estimate(measured_path: Path | None, recipe: Path) -> dict[str, Any]:
    """The projection and everything it rests on."""
    gpu = read_json(_common.RESULTS / "gpu.json")
    grid = read_json(_common.RESULTS / "grid.json")
    if measured_path is None:
        measured_path = (_common.RESULTS / "gpu.json" if gpu and gpu.get("results")
                         else _common.RESULTS / "grid.json")
    measured = read_json(measured_path) or {}
    units = plan_units(recipe)
    phases, assumptions, source = per_unit_seconds(measured)
    overhead, overhead_source = job_overhead_s(grid if measured.get("benchmark") != "grid"
                                               else measured)
    assumptions += [
        "every epoch runs (no early stopping): an upper bound",
        f"IEMOCAP: {UTTERANCES} utterances, ~4.46 s each ({AUDIO_HOURS:.1f} h), ~20 tokens; "
        "4,400 train / 1,100 dev / 5,500 encoded per fold; batch 32; bf16",
        f"per-job CPU-side overhead {overhead:.2f} s ({overhead_source})",
        "mfcc/spectrogram/prosodic run on CPU cores (featurize.json), not counted as GPU time",
        "one job at a time per GPU; H100 SXM",
    ]
    featurize = read_json(_common.RESULTS / "featurize.json")
    return {"inputs": {"measured": str(measured_path.relative_to(_common.ROOT)
                                       if measured_path.is_relative_to(_common.ROOT)
                                       else measured_path),
                       "source": source, "units": units,
                       "phases_s": {k: round(v, 4) for k, v in phases.items()},
                       "job_overhead_s": overhead},
            "assumptions": assumptions,
            "projection": project(units, phases, overhead, featurize)}


def main() -> None:
    _common.offline()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", type=Path, default=None,
                        help="gpu.json or grid.json (default: gpu.json if measured)")
    parser.add_argument("--recipe", type=Path, default=_common.ROOT / "recipes/full_grid.yaml")
    parser.add_argument("--out", default=None, help="default results/full_grid_cost.json")
    args = parser.parse_args()
    figures = estimate(args.measured, args.recipe)
    p, u = figures["projection"], figures["inputs"]["units"]
    print(f"full grid: {u['jobs']} head jobs, {u['stages']} stages, "
          f"{u['feature_extractions']} feature extractions; per-phase times: "
          f"{figures['inputs']['source']}")
    for part, hours in p["gpu_hours"].items():
        print(f"  {part:18s} {hours:8.2f} H100-hours")
    print(f"  {'total':18s} {p['total_h100_hours']:8.2f} H100-hours (target <= "
          f"{TARGET_HOURS:.0f}); CPU features {p['cpu_core_hours_mfcc_spectrogram_prosodic']}"
          " core-hours")
    for line in figures["assumptions"]:
        print(f"  - {line}")
    _common.write_report("full_grid_cost", args.out, target={"h100_hours_at_most": TARGET_HOURS},
                         **figures)


if __name__ == "__main__":
    main()
