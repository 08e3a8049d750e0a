"""Project the H100-hours of a grid recipe (default ``recipes/full_grid.yaml``, staged encoders).

Units come from the recipe's plan: every job, grouped by head kind (its inputs, fusion and
approach); every encoder stage (text config x fold x seed); wav2vec feature extraction
(5,531 IEMOCAP four-class utterances per wav2vec config). Each unit's steps are counted
(batches of 32 per epoch, dev evaluation each epoch, then the final predictions: test, plus
train for an approach whose second stage reads the network's training-set outputs, as the
runner does; a stage encodes every split) and multiplied by a seconds-per-step table:

- measured on a GPU, from ``benchmarks/results/gpu.json`` when it holds results; else
- estimated from ``benchmarks/results/step_work.json`` (FLOPs, kernels and host seconds per
  step counted on the CPU) with stated H100 constants: host = host seconds + kernels x launch
  cost; device = max(FLOPs / (peak x utilisation), kernels x shortest kernel); step = host +
  device (no overlap assumed).

Every epoch is assumed to run (no early stopping): an upper bound. ``workers`` head jobs per
GPU divide the host time of head steps (``emoplug run --workers N``); that figure is reported
beside the one-job-per-GPU total, as an assumption. Target: <= 10 H100-hours.

    python benchmarks/full_grid_cost.py [--recipe FILE] [--workers 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import _common
import _grid_work as work

TARGET_HOURS = 10.0
#: assumed H100 SXM constants, used only to turn CPU-counted work into GPU seconds
H100 = {"bf16_peak_flops": 989e12, "utilisation": 0.25, "launch_s_per_kernel": 5e-6,
        "shortest_kernel_s": 3e-6, "hbm_bytes_per_s": 3.35e12, "hbm_efficiency": 0.5}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def estimated_step_s(step: dict[str, Any], host_extra_s: float = 0.0) -> dict[str, float]:
    """H100 seconds of one step from its counted work (see the module docstring)."""
    host = step["host_s"] + host_extra_s + step["kernels"] * H100["launch_s_per_kernel"]
    device = max(step["flops"] / (H100["bf16_peak_flops"] * H100["utilisation"]),
                 step["kernels"] * H100["shortest_kernel_s"]) \
        + step.get("hbm_bytes", 0) / (H100["hbm_bytes_per_s"] * H100["hbm_efficiency"])
    return {"host_s": host, "device_s": device, "step_s": host + device}


def head_steps(head: dict[str, Any], device_inputs: bool) -> dict[str, dict[str, float]]:
    """Estimated train and eval steps of a head kind: batches gathered from inputs packed on
    the device (the default on a GPU) where step_work.json measured that, else padded on
    the host."""
    return {phase: estimated_step_s(head[phase]["device_inputs"]
                                    if device_inputs and "device_inputs" in head[phase]
                                    else head[phase])
            for phase in ("train", "eval")}


def step_table(gpu: dict[str, Any] | None, step_work: dict[str, Any] | None
               ) -> tuple[dict[str, Any], str, list[str]]:
    """Seconds per step of every unit, where they come from, and the assumptions made."""
    tokenize = ((step_work or {}).get("results") or {}).get("tokenize", {}).get("batch_s", 0.0)
    if gpu and gpu.get("results") and gpu["results"].get("units"):
        table = gpu["results"]["units"]
        if all("host_inputs" in head for head in table["heads"].values()):
            table["host_input_heads"] = {k: h["host_inputs"] for k, h in table["heads"].items()}
        for steps in table["encoders"].values():  # tokenizing runs on the host, timed apart
            for phase in steps.values():
                phase["step_s"] += tokenize
        return table, f"measured on {gpu['results'].get('gpu')} (gpu.json)", [
            f"tokenizing a batch: {tokenize * 1e3:.2f} ms (step_work.json), added to encoder "
            "steps"]
    if not step_work or not step_work.get("results"):
        raise SystemExit("no step figures: run `python benchmarks/step_work.py` (CPU) or "
                         "`python benchmarks/gpu.py` (GPU) first")
    r = step_work["results"]
    table: dict[str, Any] = {"heads": {}, "host_input_heads": {}, "encoders": {},
                             "tokenize_batch_s": tokenize}
    for name, head in r["heads"].items():
        table["heads"][name] = head_steps(head, device_inputs=True)
        table["host_input_heads"][name] = head_steps(head, device_inputs=False)
    for family, enc in r["encoders"].items():
        table["encoders"][family] = {phase: estimated_step_s(enc[phase], tokenize)
                                     for phase in ("train", "eval")}
    table["wav2vec_utterance"] = estimated_step_s(r["wav2vec"])
    assumptions = [
        "ESTIMATED, not measured on a GPU: step_work.json's counts with assumed H100 SXM "
        f"constants {H100}",
        "host seconds are this CPU's (cut widths, full-size batch collation); a GPU host's "
        "core is assumed no slower",
        "host and device time are added (no overlap), although the loop never waits for "
        "the GPU inside an epoch",
    ]
    if all("device_inputs" in head["train"] for head in r["heads"].values()):
        assumptions.append(
            "head batches are gathered from inputs packed on the GPU (EMOPLUG_DEVICE_INPUTS="
            "auto): host = index building (timed at feature width 8) + the step; device += "
            "the gather's and cast's bytes at the HBM rate; 'head_jobs_host_inputs' is the "
            "same with batches padded on the host (EMOPLUG_DEVICE_INPUTS=off; its "
            "host-to-device copies not counted)")
    return table, "ESTIMATED from CPU-counted work (step_work.json) and assumed H100 " \
                  "constants", assumptions


def plan_units(plan: Any) -> dict[str, Any]:
    """Jobs per head kind, stages per encoder family, wav2vec configs and epochs."""
    kinds = work.head_kinds(plan)
    stages: Counter[str] = Counter()
    finetune_jobs: Counter[str] = Counter()
    seen = set()
    for job in plan.jobs:
        text = job.cell.config["text"]
        if text is None:
            continue
        mode = text.get("mode", "finetune")
        if mode == "staged" and (job.cell.text, job.fold, job.seed) not in seen:
            seen.add((job.cell.text, job.fold, job.seed))
            stages[text["type"]] += 1
        elif mode == "finetune":
            finetune_jobs[text["type"]] += 1
    wav2vec = [name for name, cfg in plan.components.get("audio", {}).items()
               if cfg["type"] == "wav2vec" and any(j.cell.audio == name for j in plan.jobs)]
    train = plan.recipe.train
    return {"jobs": len(plan.jobs), "head_kinds": {k.name: v["jobs"] for k, v in kinds.items()},
            "head_predicts_train": {k.name: predicts_training_set(v["config"]["approach"])
                                    for k, v in kinds.items()},
            "stages": dict(stages), "finetune_jobs": dict(finetune_jobs),
            "wav2vec_configs": wav2vec, "epochs": train.epochs,
            "stage_epochs": train.stage_epochs or train.epochs, "fold_sizes": work.fold_sizes()}


def predicts_training_set(approach_config: dict[str, Any]) -> bool:
    """Whether a job of this approach predicts its training set after training."""
    from emoplug.registry import get_registry
    from emoplug.train.evaluate import predicts_training_set as runner_predicts

    return runner_predicts(get_registry().build("approach", approach_config))


def job_overhead_s(grid: dict[str, Any] | None) -> tuple[float, str]:
    """Seconds per head job outside its steps (setup, writing results): a whole staged demo
    job of grid.json, training included, as an upper bound; else 1 s."""
    try:
        return float(grid["results"]["modes"]["staged"]["mean_job_s"]), \
            "measured: mean staged demo job of grid.json on the CPU, training included"
    except (TypeError, KeyError):
        return 1.0, "ASSUMPTION: 1 s per job"


def project(units: dict[str, Any], table: dict[str, Any], overhead: float, workers: int,
            featurize: dict[str, Any] | None) -> dict[str, Any]:
    """Seconds per unit and the H100-hours (CPU feature core-hours reported apart)."""
    sizes = units["fold_sizes"]
    n = {split: work.batches(count) for split, count in sizes.items()}
    every_split = n["train"] + n["dev"] + n["test"]  # a stage encodes the whole fold

    def passes(train: dict[str, float], evaluate: dict[str, float], epochs: int,
               predict_batches: int, share: float = 1.0) -> float:
        """``epochs`` of training with a dev pass each, then ``predict_batches`` of final
        predictions; ``share`` scales the host part (concurrent workers)."""
        def step(s: dict[str, float]) -> float:
            return s["host_s"] * share + s["device_s"] if "host_s" in s else s["step_s"]
        return epochs * (n["train"] * step(train) + n["dev"] * step(evaluate)) \
            + predict_batches * step(evaluate)

    def job_predictions(kind: str | None) -> int:
        """Test, plus train where the approach fits on it (unknown kind: counted); the
        best epoch's dev outputs are kept, not predicted again."""
        with_train = units["head_predicts_train"].get(kind, True)
        return n["test"] + (n["train"] if with_train else 0)

    missing = sorted(set(units["head_kinds"]) - set(table["heads"]))
    if missing:
        raise SystemExit(f"no step figures for head kinds {missing}: re-run step_work.py/gpu.py "
                         "with this recipe")
    head_s = {"one_job_per_gpu": 0.0, f"{workers}_jobs_per_gpu": 0.0}
    per_kind = {}
    for kind, jobs in units["head_kinds"].items():
        steps = table["heads"][kind]
        predictions = job_predictions(kind)
        alone = passes(steps["train"], steps["eval"], units["epochs"], predictions) + overhead
        split = "host_s" in steps["train"]  # measured steps have no host part to share
        shared = passes(steps["train"], steps["eval"], units["epochs"], predictions,
                        1 / workers) \
            + (overhead / workers if split else overhead)
        per_kind[kind] = {"jobs": jobs, "seconds_per_job": round(alone, 2)}
        head_s["one_job_per_gpu"] += jobs * alone
        head_s[f"{workers}_jobs_per_gpu"] += jobs * shared
    host_inputs = table.get("host_input_heads")  # estimates only: batches padded on the host
    host_inputs_s = sum(jobs * (passes(host_inputs[kind]["train"], host_inputs[kind]["eval"],
                                       units["epochs"], job_predictions(kind)) + overhead)
                        for kind, jobs in units["head_kinds"].items()) if host_inputs else None
    stage_s = {family: count * passes(table["encoders"][family]["train"],
                                      table["encoders"][family]["eval"], units["stage_epochs"],
                                      every_split)
               for family, count in units["stages"].items()}
    finetune_s = {family: count * passes(table["encoders"][family]["train"],
                                         table["encoders"][family]["eval"], units["epochs"],
                                         job_predictions(None))
                  for family, count in units["finetune_jobs"].items()}
    wav2vec_s = len(units["wav2vec_configs"]) * work.IEMOCAP["utterances"] \
        * table["wav2vec_utterance"]["step_s"]
    common = sum(stage_s.values()) + sum(finetune_s.values()) + wav2vec_s
    totals = {name: round((common + s) / 3600, 2) for name, s in head_s.items()}
    cpu_core_h = None
    if featurize:
        audio_h = work.IEMOCAP["utterances"] * work.UTTERANCE_S / 3600
        per_audio_hour = {name: r["seconds"] * 3600 / featurize["audio"]["seconds"]
                          for name, r in featurize["results"].items()}
        cpu_core_h = round(sum(per_audio_hour.values()) * audio_h / 3600, 3)
    return {
        "gpu_hours": {"encoder_stages": round(sum(stage_s.values()) / 3600, 3),
                      "finetune_jobs": round(sum(finetune_s.values()) / 3600, 3),
                      "head_jobs_one_per_gpu": round(head_s["one_job_per_gpu"] / 3600, 3),
                      f"head_jobs_{workers}_per_gpu":
                          round(head_s[f"{workers}_jobs_per_gpu"] / 3600, 3),
                      "head_jobs_host_inputs": (round(host_inputs_s / 3600, 3)
                                                if host_inputs_s is not None else None),
                      "wav2vec_features": round(wav2vec_s / 3600, 3)},
        "seconds_per_stage": {f: round(s / units["stages"][f], 1) for f, s in stage_s.items()},
        "head_kinds": per_kind,
        "total_h100_hours": totals["one_job_per_gpu"],
        f"total_h100_hours_{workers}_jobs_per_gpu": totals[f"{workers}_jobs_per_gpu"],
        "cpu_core_hours_mfcc_spectrogram_prosodic": cpu_core_h,
        "meets_target": totals["one_job_per_gpu"] <= TARGET_HOURS,
    }


def estimate(recipe: Path, workers: int, gpu_path: Path | None = None,
             step_work_path: Path | None = None) -> dict[str, Any]:
    """The projection and everything it rests on."""
    gpu = read_json(gpu_path or work.results_path("gpu"))
    step_work = read_json(step_work_path or work.results_path("step_work"))
    table, source, assumptions = step_table(gpu, step_work)
    units = plan_units(work.load_full_plan(recipe))
    overhead, overhead_source = job_overhead_s(read_json(work.results_path("grid")))
    sizes = units["fold_sizes"]
    assumptions += [
        "every epoch runs (no early stopping): an upper bound",
        f"IEMOCAP four-class: {work.IEMOCAP['utterances']} utterances of ~{work.UTTERANCE_S} s "
        f"and ~{work.TOKENS} tokens; mean LOSO fold {sizes['train']} train / {sizes['dev']} "
        f"dev / {sizes['test']} test; batch {work.BATCH}; bf16",
        f"per-job overhead {overhead:.2f} s ({overhead_source})",
        "mfcc/spectrogram/prosodic are computed on CPU cores (featurize.json), not GPU time",
        f"{workers} jobs per GPU: the host part of head steps divided by {workers} (the GPU "
        "host's cores run the workers); device time and stages unchanged. Not measured",
        "packing inputs on the GPU is not counted: once per process and featurizer (IEMOCAP "
        "wav2vec: 5531 x 222 x 2304 float16 = 5.7 GB of GPU memory; the other three "
        "features 1.9 GB) and once per stage for its text outputs (~0.2 GB)",
    ]
    featurize = read_json(work.results_path("featurize"))
    return {"inputs": {"source": source, "units": units, "job_overhead_s": overhead,
                       "step_seconds": _rounded(table)},
            "assumptions": assumptions,
            "projection": project(units, table, overhead, workers, featurize)}


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 6) if isinstance(value, float) else value


def main() -> None:
    _common.offline()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=_common.ROOT / "recipes/full_grid.yaml")
    parser.add_argument("--workers", type=int, default=8, help="head jobs per GPU (variant)")
    parser.add_argument("--out", default=None, help="default results/full_grid_cost.json")
    args = parser.parse_args()
    figures = estimate(args.recipe, args.workers)
    p, u = figures["projection"], figures["inputs"]["units"]
    print(f"{u['jobs']} jobs in {len(u['head_kinds'])} head kinds, "
          f"{sum(u['stages'].values())} encoder stages; step times: "
          f"{figures['inputs']['source']}")
    for part, hours in p["gpu_hours"].items():
        if hours is not None:
            print(f"  {part:24s} {hours:8.2f} H100-hours")
    print(f"  {'total, one job per GPU':24s} {p['total_h100_hours']:8.2f} H100-hours "
          f"(target <= {TARGET_HOURS:.0f})")
    print(f"  {f'total, {args.workers} jobs per GPU':24s} "
          f"{p[f'total_h100_hours_{args.workers}_jobs_per_gpu']:8.2f} H100-hours")
    for line in figures["assumptions"]:
        print(f"  - {line}")
    _common.write_report("full_grid_cost", args.out, target={"h100_hours_at_most": TARGET_HOURS},
                         settings={"workers": args.workers}, **figures)


if __name__ == "__main__":
    main()
