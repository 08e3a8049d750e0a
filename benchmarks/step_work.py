"""The work in one step of every phase of the full grid, counted on the CPU: what
``full_grid_cost.py`` turns into GPU time when no GPU measurement exists.

For every distinct head-job kind of ``recipes/full_grid.yaml`` (IEMOCAP-sized cached text
outputs and audio features), every base-size text encoder's staged fine-tuning, and a
wav2vec2-base forward over one utterance:

- ``flops``: floating-point operations of one step at full size (``torch.utils.flop_counter``);
- ``kernels``: operations dispatched to a device (aten calls that are not views) in that step;
- ``host_s``: seconds of host-side work per step: the same step with every width cut
  (hidden 64, batch 2; same operations, negligible arithmetic) timed on this CPU, plus
  collating a full-size batch on the host. A GPU host does this work before it can launch
  the kernels;
- ``device_inputs`` (heads): the same step with its batch gathered from inputs packed on the
  device (``EMOPLUG_DEVICE_INPUTS``, the default on a GPU): host seconds of that gathering
  (timed at feature width 8: the same host work), its kernels and host-to-device copies, and
  ``hbm_bytes`` of device memory it reads and writes at full size;
- ``cpu_s``: the full-size step on this CPU, for reference.

Steps are bf16 autocast, fused AdamW and gradient clipping, as ``emoplug.train.loop`` runs them.

    python benchmarks/step_work.py [--steps 5] [--out FILE.json] [--kinds N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import _grid_work as work


def count(step: Callable[[], None]) -> dict[str, int]:
    """FLOPs and device kernels of one ``step()`` (run once before, to warm up)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class KernelCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if not func.is_view:
                self.kernels += 1
            return func(*args, **(kwargs or {}))

    step()
    flops, kernels = FlopCounterMode(display=False), KernelCounter()
    with flops, kernels:
        step()
    return {"flops": int(flops.get_total_flops()), "kernels": kernels.kernels}


def seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return _common.median(times)


def fixed(batch: Any) -> Callable[[], Any]:
    return lambda: batch


def head_work(registry: Any, config: dict[str, Any], audio: tuple[int, int] | None,
              repeats: int, text_dim: int = work.TEXT_HIDDEN) -> dict[str, Any]:
    """Counts, host and CPU seconds of one head kind's train and eval steps, with batches
    padded on the host (``host_s``) and gathered from inputs packed on the device
    (``device_inputs``: the default on a GPU)."""
    full = work.build_head(registry, config, text_dim=text_dim, tokens=work.TOKENS,
                           audio=audio)
    make = work.head_batches(full)
    collate_s = seconds(make, repeats)
    batch = make()
    gather, copies, _ = work.device_batches(full, "cpu", width=8)
    gather_s, gather_kernels = seconds(gather, repeats), count(gather)["kernels"] + copies
    hbm_bytes = work.device_batches(full, "cpu")[2]
    small = work.build_head(registry, config, text_dim=64, tokens=4, batch=2,
                            audio=(8, 48) if audio is not None else None)
    small_batch = work.head_batches(small)()
    out: dict[str, Any] = {"parameters": full.parameters, "collate_s": round(collate_s, 6),
                           "device_collate": {"host_s": round(gather_s, 6),
                                              "kernels": gather_kernels,
                                              "hbm_bytes": hbm_bytes}}
    for phase, full_step, small_step in (
            ("train", work.train_step(full.model, full.loss, fixed(batch), "cpu"),
             work.train_step(small.model, small.loss, fixed(small_batch), "cpu")),
            ("eval", work.eval_step(full.model, fixed(batch), "cpu"),
             work.eval_step(small.model, fixed(small_batch), "cpu"))):
        counted, step_host_s = count(full_step), seconds(small_step, repeats)
        out[phase] = {**counted,
                      "host_s": round(step_host_s + collate_s, 6),
                      "cpu_s": round(seconds(full_step, max(1, repeats // 2)), 6),
                      "device_inputs": {"flops": counted["flops"],
                                        "kernels": counted["kernels"] + gather_kernels,
                                        "host_s": round(step_host_s + gather_s, 6),
                                        "hbm_bytes": hbm_bytes}}
    return out


def encoder_work(family: str, repeats: int, small: bool = False) -> dict[str, Any]:
    """Counts and host seconds of a base encoder's fine-tuning and encoding steps
    (``small``: counted on the cut-width model too, for tests)."""
    full = work.build_encoder(family, small=small)
    small = work.build_encoder(family, small=True)
    batch, small_batch = work.encoder_batches(full)(), work.encoder_batches(small, batch=2,
                                                                            tokens=4)()
    out: dict[str, Any] = {"parameters": sum(p.numel() for p in full.parameters())}
    loss = work.staged_loss()
    for phase, full_step, small_step in (
            ("train", work.train_step(full, loss, fixed(batch), "cpu"),
             work.train_step(small, loss, fixed(small_batch), "cpu")),
            ("eval", work.eval_step(full, fixed(batch), "cpu"),
             work.eval_step(small, fixed(small_batch), "cpu"))):
        out[phase] = {**count(full_step), "host_s": round(seconds(small_step, repeats), 6)}
    return out


def tokenize_work(repeats: int) -> dict[str, Any]:
    """Seconds to tokenize a batch of 32 demo transcripts with a fast WordPiece tokenizer
    (the tiny BERT's, trained on the demo corpus)."""
    from transformers import AutoTokenizer

    from emoplug.registry import get_registry
    from emoplug_text.families import FAMILIES
    from emoplug_text.tiny import tiny_checkpoint

    corpus = get_registry().build("dataset", {"type": "demo"}).load(
        need_audio=False, cache_dir=_common.WORK / "step_work")
    texts = [u.text for u in corpus.utterances if u.text]
    directory = tiny_checkpoint(FAMILIES["bert"], texts, _common.WORK / "step_work",
                                hidden=32, layers=1, vocab=2000, max_length=128)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    batch = texts[:work.BATCH]
    s = seconds(lambda: tokenizer(batch, padding="longest", truncation=True, max_length=128,
                                  return_tensors="pt"), repeats)
    return {"batch_s": round(s, 6), "texts": len(batch)}


def wav2vec_work(repeats: int, small: bool = False) -> dict[str, Any]:
    """Counts and host seconds of featurizing one mean-length utterance (no gradients)."""
    import torch

    samples = int(work.UTTERANCE_S * work.SAMPLE_RATE)
    wave = torch.randn(1, samples)

    def step(model: Any) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                model(wave, output_hidden_states=True)
        return run

    full, cut = work.wav2vec_model(small=small), work.wav2vec_model(small=True)
    return {"parameters": sum(p.numel() for p in full.parameters()), "samples": samples,
            **count(step(full)), "host_s": round(seconds(step(cut), repeats), 6)}


def measure(recipe: Path, repeats: int, small: bool = False) -> dict[str, Any]:
    """Every unit of ``recipe``; ``small`` (tests): three head kinds with small inputs, the
    BERT encoder and wav2vec at cut widths."""
    from emoplug.registry import get_registry

    registry = get_registry()
    plan = work.load_full_plan(recipe)
    kinds = work.head_kinds(plan)
    shapes = {name: work.audio_shape(registry, cfg)
              for name, cfg in plan.components["audio"].items()}
    heads = {}
    ordered = sorted(kinds.items(), key=lambda kv: kv[0].name)
    for kind, info in ordered[-3:] if small else ordered:
        audio = shapes[kind.audio] if kind.audio is not None else None
        if small and audio is not None:
            audio = (8, 48)
        heads[kind.name] = {"jobs": info["jobs"], "audio_shape": audio,
                            **head_work(registry, info["config"], audio, repeats,
                                        text_dim=64 if small else work.TEXT_HIDDEN)}
        print(f"  head {kind.name:45s} {info['jobs']:4d} jobs  train "
              f"{heads[kind.name]['train']['kernels']:5d} kernels "
              f"{heads[kind.name]['train']['host_s'] * 1e3:6.2f} ms host, "
              f"{heads[kind.name]['train']['device_inputs']['host_s'] * 1e3:6.2f} ms with "
              "device inputs", flush=True)
    encoders = {}
    for family in ["bert"] if small else list(work.ENCODER_CONFIGS):
        encoders[family] = encoder_work(family, repeats, small)
        print(f"  encoder {family:8s} train {encoders[family]['train']['flops'] / 1e9:7.1f} "
              f"GFLOP {encoders[family]['train']['kernels']:5d} kernels "
              f"{encoders[family]['train']['host_s'] * 1e3:6.1f} ms host", flush=True)
    return {"recipe": str(recipe.relative_to(_common.ROOT) if recipe.is_relative_to(
                _common.ROOT) else recipe),
            "batch": work.BATCH, "tokens": work.TOKENS, "iemocap": work.IEMOCAP,
            "audio_shapes": shapes, "head_kinds": len(kinds), "heads": heads,
            "encoders": encoders, "tokenize": tokenize_work(repeats),
            "wav2vec": wav2vec_work(repeats, small)}


def main() -> None:
    _common.offline()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=_common.ROOT / "recipes/full_grid.yaml")
    parser.add_argument("--steps", type=int, default=5, help="timed repeats per host figure")
    parser.add_argument("--out", default=None, help="default benchmarks/results/step_work.json")
    args = parser.parse_args()
    threads = _common.single_thread()
    figures = measure(args.recipe, args.steps)
    _common.write_report("step_work", args.out, settings={"steps": args.steps,
                                                          "torch_threads": threads},
                         results=figures)


if __name__ == "__main__":
    main()
