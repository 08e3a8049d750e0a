"""GPU figures: a base-size encoder's fine-tuning step in fp32 vs bf16, and the per-phase
times of one staged grid unit that ``full_grid_cost.py`` projects the full grid from.

- Step: RoBERTa-base shape (``RobertaConfig()``, random weights, no download) + a linear
  head, AdamW, batch 32 of 22 tokens: samples/s, tokens/s, peak memory, and model FLOPs
  utilisation = 6 x parameters x tokens/s / the GPU's peak (assumed H100 SXM dense: bf16 989
  TFLOPS, tf32 494, fp32 67).
- Phases on IEMOCAP-sized data (bf16): encoder fine-tuning steps (4,400 train utterances of
  ~20 tokens per epoch), encoding every utterance of a fold (5,500), and a head job's steps on
  cached outputs (attention fusion, MFCC CNN on 120-dim frames, 4.5 s utterances).

Without CUDA it prints "CUDA absent, skipped" and writes a JSON saying so (exit 0);
``--device cpu --steps 2 --small`` runs everything on a small model on the CPU (tests).

    python benchmarks/gpu.py [--steps 30] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import _common

#: assumed dense peak FLOP/s of an H100 SXM
PEAK_FLOPS = {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}
BATCH = 32
TOKENS = 22  # ~20 words' tokens + 2 special tokens
IEMOCAP = {"train_utterances": 4400, "fold_utterances": 5500, "dev_utterances": 1100,
           "frames_per_utterance": 450, "mfcc_dim": 120}


def encoder_model(small: bool, device: str) -> Any:
    """RoBERTa (base shape, or a small one) + a linear head on the first token."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    config = (RobertaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=256, vocab_size=1000) if small
              else RobertaConfig())
    torch.manual_seed(0)
    encoder = RobertaModel(config, add_pooling_layer=False)
    head = torch.nn.Linear(config.hidden_size, 7)
    return torch.nn.ModuleDict({"encoder": encoder, "head": head}).to(device)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_steps(step: Any, steps: int, device: str, warmup: int = 3) -> float:
    """Median seconds of ``step()`` over ``steps`` calls after ``warmup``."""
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return _common.median(times)


def encoder_steps(small: bool, device: str, precision: str, steps: int) -> dict[str, Any]:
    """Fine-tuning and inference step times of the encoder at ``precision``."""
    import torch

    model = encoder_model(small, device)
    vocab = model["encoder"].config.vocab_size
    ids = torch.randint(5, vocab, (BATCH, TOKENS), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 7, (BATCH,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                              enabled=precision == "bf16")

    def train_step() -> None:
        with autocast:
            hidden = model["encoder"](input_ids=ids, attention_mask=mask).last_hidden_state
            loss = torch.nn.functional.cross_entropy(model["head"](hidden[:, 0]).float(),
                                                     labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def eval_step() -> None:
        with torch.no_grad(), autocast:
            model["encoder"](input_ids=ids, attention_mask=mask)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train_s = timed_steps(train_step, steps, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    eval_s = timed_steps(eval_step, steps, device)
    params = sum(p.numel() for p in model.parameters())
    tokens_per_s = BATCH * TOKENS / train_s
    flops = 6 * params * tokens_per_s
    peak_flops = PEAK_FLOPS[precision] if device.startswith("cuda") else None
    return {"precision": precision, "parameters": params, "train_step_s": round(train_s, 5),
            "eval_step_s": round(eval_s, 5), "samples_per_s": round(BATCH / train_s, 1),
            "tokens_per_s": round(tokens_per_s, 1), "model_tflops": round(flops / 1e12, 2),
            "mfu": round(flops / peak_flops, 4) if peak_flops else None,
            "peak_memory_gib": round(peak, 2) if peak is not None else None}


def head_steps(small: bool, device: str, steps: int) -> dict[str, Any]:
    """Train and eval step times of a head job on cached outputs (bf16 autocast)."""
    import torch

    from emoplug.registry import get_registry
    from emoplug.train.model import CellModel
    from emoplug.types import Targets

    registry = get_registry()
    text_dim = 64 if small else 768
    frames = 40 if small else IEMOCAP["frames_per_utterance"]
    audio = registry.build("audio", {"type": "mfcc", "n_mfcc": 40, "deltas": 2})
    audio_module = audio.build_encoder(IEMOCAP["mfcc_dim"])
    fusion = registry.build("fusion", {"type": "attention"}).build(
        {"text": text_dim, "audio": audio_module.dim}, 4)
    torch.manual_seed(0)
    model = CellModel(fusion, audio=audio_module).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def batch() -> dict[str, Any]:  # built per step on the CPU and moved, like the runner
        seq = torch.randn(BATCH, TOKENS, text_dim)
        return {"text_cached": (seq.to(device), torch.ones(BATCH, TOKENS, dtype=torch.bool,
                                                           device=device),
                                seq[:, 0].to(device)),
                "audio": (torch.randn(BATCH, frames, IEMOCAP["mfcc_dim"]).to(device),
                          torch.ones(BATCH, frames, dtype=torch.bool, device=device)),
                "targets": Targets(torch.randint(0, 4, (BATCH,)).to(device),
                                   torch.zeros(BATCH, 3).to(device))}

    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16)

    def train_step() -> None:
        b = batch()
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(b).float(), b["targets"].labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def eval_step() -> None:
        with torch.no_grad(), autocast:
            model(batch())

    return {"parameters": sum(p.numel() for p in model.parameters()),
            "train_step_s": round(timed_steps(train_step, steps, device), 5),
            "eval_step_s": round(timed_steps(eval_step, steps, device), 5),
            "frames_per_utterance": frames}


def phases(encoder: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    """Per-epoch and per-pass seconds on IEMOCAP-sized data, from the step times."""
    def batches(n: int) -> int:
        return math.ceil(n / BATCH)

    return {
        "encoder_train_epoch_s": round(batches(IEMOCAP["train_utterances"])
                                       * encoder["train_step_s"], 3),
        "encoder_dev_eval_s": round(batches(IEMOCAP["dev_utterances"])
                                    * encoder["eval_step_s"], 3),
        "encoder_encode_fold_s": round(batches(IEMOCAP["fold_utterances"])
                                       * encoder["eval_step_s"], 3),
        "head_train_epoch_s": round(batches(IEMOCAP["train_utterances"])
                                    * head["train_step_s"], 3),
        "head_dev_eval_s": round(batches(IEMOCAP["dev_utterances"]) * head["eval_step_s"], 3),
        "head_predict_fold_s": round(batches(IEMOCAP["fold_utterances"])
                                     * head["eval_step_s"], 3),
        "note": "step times x batches of 32 (extrapolated from the timed steps)",
    }


def benchmark(device: str, steps: int, small: bool) -> dict[str, Any]:
    import torch

    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (67 TFLOPS peak)
    fp32 = encoder_steps(small, device, "fp32", steps)
    bf16 = encoder_steps(small, device, "bf16", steps)
    head = head_steps(small, device, steps)
    return {"device": device, "gpu": torch.cuda.get_device_name(0)
            if device.startswith("cuda") else None,
            "batch": BATCH, "tokens_per_sample": TOKENS, "steps_timed": steps,
            "model": "small RoBERTa (tests)" if small else "RobertaConfig() (base shape)",
            "encoder_step": {"fp32": fp32, "bf16": bf16},
            "bf16_speedup": round(fp32["train_step_s"] / bf16["train_step_s"], 2),
            "head_step_bf16": head, "iemocap_sizes": IEMOCAP,
            "phases_bf16": phases(bf16, head)}


def main() -> None:
    _common.offline()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--small", action="store_true", help="a small model (tests)")
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
    figures = benchmark(args.device, args.steps, args.small)
    for precision, f in figures["encoder_step"].items():
        mfu = f"{f['mfu']:.1%}" if f["mfu"] is not None else "n/a"
        print(f"{precision}: {f['samples_per_s']:8.1f} samples/s {f['tokens_per_s']:10.0f} "
              f"tokens/s  peak {f['peak_memory_gib']} GiB  MFU {mfu}")
    print("phases (bf16):", figures["phases_bf16"])
    _common.write_report("gpu", args.out, machine=machine, settings=settings, skipped=None,
                         results=figures)


if __name__ == "__main__":
    main()
