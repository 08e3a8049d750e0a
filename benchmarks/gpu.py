"""GPU figures: a base-size encoder's fine-tuning step in fp32 vs bf16, and the seconds per
step of every unit of the full grid, from which ``full_grid_cost.py`` projects its H100-hours.

- Precision: RoBERTa-base shape (random weights, no download) in emoplug's text module with
  the staged text-only head, AdamW, batch 32 of 22 tokens: samples/s, tokens/s, peak memory,
  and model FLOPs utilisation = counted FLOPs per step / step time / the GPU's peak (assumed
  H100 SXM dense: bf16 989 TFLOPS, fp32 67).
- Units (bf16, the steps ``emoplug.train.loop`` takes, built by ``_grid_work``): every head
  kind of the recipe on IEMOCAP-sized cached text outputs and audio features (collating each
  batch included: gathered from inputs packed on the GPU, as a GPU run does by default, and
  under ``host_inputs`` padded on the host), every base encoder's fine-tuning and encoding
  steps, and wav2vec2-base over one mean-length utterance.

Without CUDA it prints "CUDA absent, skipped" and writes a JSON saying so (exit 0);
``--device cpu --steps 2 --small`` runs small models on the CPU (tests).

    python benchmarks/gpu.py [--steps 30] [--recipe FILE] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import _grid_work as work
from step_work import count, fixed

#: assumed dense peak FLOP/s of an H100 SXM
PEAK_FLOPS = {"bf16": 989e12, "fp32": 67e12}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(step: Callable[[], None], steps: int, device: str, warmup: int = 3) -> float:
    """Seconds per ``step()`` over ``steps`` back-to-back calls after ``warmup`` (one sync
    at each end, as the training loop runs them)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def precision_steps(small: bool, device: str, steps: int) -> dict[str, Any]:
    """RoBERTa fine-tuning in fp32 and bf16: throughput, peak memory, MFU."""
    import torch

    out = {}
    for precision in ("fp32", "bf16"):
        model = work.build_encoder("roberta", small=small)
        batch = work.encoder_batches(model)()
        step = work.train_step(model, work.staged_loss(), fixed(batch), device,
                               bf16=precision == "bf16")
        flops = count(step)["flops"]
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(step, steps, device)
        peak_mem = (torch.cuda.max_memory_allocated() / 2**30
                    if device.startswith("cuda") else None)
        peak = PEAK_FLOPS[precision] if device.startswith("cuda") else None
        out[precision] = {
            "train_step_s": round(seconds, 5),
            "samples_per_s": round(work.BATCH / seconds, 1),
            "tokens_per_s": round(work.BATCH * work.TOKENS / seconds, 1),
            # three significant digits: a small model on a busy CPU is far below 0.01
            "model_tflops": float(f"{flops / seconds / 1e12:.3g}"),
            "mfu": round(flops / seconds / peak, 4) if peak else None,
            "peak_memory_gib": round(peak_mem, 2) if peak_mem is not None else None}
        del model, step
    return out


def head_times(head: Any, make: Callable[[], Any], device: str, steps: int
               ) -> dict[str, dict[str, float]]:
    """Seconds per train and eval step of a head, collating with ``make`` every step."""
    return {"train": {"step_s": timed(work.train_step(head.model, head.loss, make, device),
                                      steps, device)},
            "eval": {"step_s": timed(work.eval_step(head.model, make, device), steps, device)}}


def unit_times(recipe: Path, small: bool, device: str, steps: int) -> dict[str, Any]:
    """Seconds per train/eval step of every head kind and encoder, and per wav2vec utterance,
    in the table format ``full_grid_cost.py`` reads."""
    import torch

    from emoplug.registry import get_registry

    registry = get_registry()
    plan = work.load_full_plan(recipe)
    shapes = {name: work.audio_shape(registry, cfg)
              for name, cfg in plan.components["audio"].items()}
    kinds = sorted(work.head_kinds(plan).items(), key=lambda kv: kv[0].name)
    units: dict[str, Any] = {"heads": {}, "encoders": {}}
    for kind, info in kinds[:3] if small else kinds:
        audio = shapes[kind.audio] if kind.audio is not None else None
        if small and audio is not None:
            audio = (8, 48)
        head = work.build_head(registry, info["config"], audio=audio,
                               text_dim=64 if small else work.TEXT_HIDDEN, tokens=work.TOKENS)
        gathered = work.device_batches(head, device)[0]  # a GPU run's default
        units["heads"][kind.name] = head_times(head, gathered, device, steps)
        units["heads"][kind.name]["host_inputs"] = head_times(  # EMOPLUG_DEVICE_INPUTS=off
            head, work.head_batches(head), device, steps)
    for family in ["bert"] if small else list(work.ENCODER_CONFIGS):
        model = work.build_encoder(family, small=small)
        batch = work.encoder_batches(model)()
        units["encoders"][family] = {
            "train": {"step_s": timed(work.train_step(model, work.staged_loss(),
                                                      fixed(batch), device),
                                      steps, device)},
            "eval": {"step_s": timed(work.eval_step(model, fixed(batch), device),
                                     steps, device)}}
        del model
    wav2vec = work.wav2vec_model(small=small).to(device)
    wave = torch.randn(1, int(work.UTTERANCE_S * work.SAMPLE_RATE), device=device)

    def featurize() -> None:
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            wav2vec(wave, output_hidden_states=True)

    units["wav2vec_utterance"] = {"step_s": timed(featurize, steps, device)}
    return units


def benchmark(device: str, steps: int, small: bool, recipe: Path) -> dict[str, Any]:
    import torch

    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (67 TFLOPS peak)
    precisions = precision_steps(small, device, steps)
    return {"device": device, "gpu": torch.cuda.get_device_name(0)
            if device.startswith("cuda") else None,
            "batch": work.BATCH, "tokens_per_sample": work.TOKENS, "steps_timed": steps,
            "model": "small RoBERTa (tests)" if small else "RoBERTa-base shape",
            "encoder_step": precisions,
            "bf16_speedup": round(precisions["fp32"]["train_step_s"]
                                  / precisions["bf16"]["train_step_s"], 2),
            "units": unit_times(recipe, small, device, steps)}


def main() -> None:
    _common.offline()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--small", action="store_true", help="small models (tests)")
    parser.add_argument("--recipe", type=Path, default=_common.ROOT / "recipes/full_grid.yaml")
    parser.add_argument("--out", default=None, help="default benchmarks/results/gpu.json")
    args = parser.parse_args()
    import torch

    settings = {"device": args.device, "steps": args.steps, "small": args.small,
                "peak_flops_assumed": PEAK_FLOPS}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA absent, skipped")
        _common.write_report("gpu", args.out, settings=settings, skipped="CUDA absent",
                             results=None)
        return
    machine = _common.machine()
    figures = benchmark(args.device, args.steps, args.small, args.recipe)
    for precision, f in figures["encoder_step"].items():
        mfu = f"{f['mfu']:.1%}" if f["mfu"] is not None else "n/a"
        print(f"{precision}: {f['samples_per_s']:8.1f} samples/s {f['tokens_per_s']:10.0f} "
              f"tokens/s  peak {f['peak_memory_gib']} GiB  MFU {mfu}")
    for name, head in figures["units"]["heads"].items():
        print(f"  head {name:45s} train {head['train']['step_s'] * 1e3:7.2f} ms")
    _common.write_report("gpu", args.out, machine=machine, settings=settings, skipped=None,
                         results=figures)


if __name__ == "__main__":
    main()
