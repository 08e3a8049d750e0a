"""Training-loop speed: our loop vs Hugging Face ``Trainer``, and length bucketing on vs off.

One tiny text encoder (built through the registry, ``tiny: true``) with a linear head on its
pooled output is trained for the same number of steps on the same variable-length texts
(demo transcripts joined to 5-120 words) and batch size, from the same initial weights:

- ``emoplug.train.loop.fit`` (bucketing off, like ``Trainer``'s random sampler) vs
  ``transformers.Trainer`` (no evaluation, logging or saving), alternating ours, Trainer,
  ours, Trainer, ...; target ours/Trainer >= 1.0;
- ``fit`` with ``Loader(bucket=True)`` vs ``bucket=False``, alternating; target >= 1.3x.

``fit`` evaluates the dev loader once per epoch; it gets a one-example dev set, so the timed
region is training in both. Medians of ``--repeats`` runs each.

    python benchmarks/train_loop.py [--steps 30] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
import torch
from torch import nn

TARGET_VS_TRAINER = 1.0
TARGET_BUCKETING = 1.3


@dataclasses.dataclass
class LoopSettings:
    steps: int = 30
    batch_size: int = 16
    repeats: int = 3
    min_words: int = 5
    max_words: int = 120
    tiny_hidden: int = 128
    tiny_layers: int = 4
    lr: float = 1.0e-3
    seed: int = 0


def spread_texts(transcripts: list[str], n: int, lo: int, hi: int, seed: int) -> list[str]:
    """``n`` texts of uniformly random lengths in [lo, hi] words, cut from the transcripts
    joined end to end."""
    rng = np.random.default_rng(seed)
    words = " ".join(transcripts).split()
    out = []
    for length in rng.integers(lo, hi + 1, size=n):
        start = int(rng.integers(0, len(words) - length))
        out.append(" ".join(words[start:start + int(length)]))
    return out


def build_parts(s: LoopSettings, work: Path) -> dict[str, Any]:
    """The tiny encoder + head (initial weights), texts and labels."""
    from emoplug.registry import get_registry

    registry = get_registry()
    corpus = registry.build("dataset", {"type": "demo", "utterances_per_speaker": 8}).load(
        need_audio=False, cache_dir=work / "cache")
    transcripts = [u.text for u in corpus.utterances]
    n = s.steps * s.batch_size
    texts = spread_texts(transcripts, n, s.min_words, s.max_words, s.seed)
    labels = np.random.default_rng(s.seed).integers(0, len(corpus.labels), size=n).tolist()
    torch.manual_seed(s.seed)
    encoder = registry.build("text", {"type": "bert", "tiny": True, "mode": "finetune",
                                      "tiny_hidden": s.tiny_hidden,
                                      "tiny_layers": s.tiny_layers})
    text = encoder.build(texts=sorted(set(transcripts)), work_dir=work / "models")
    head = PooledHead(text.dim, len(corpus.labels))
    params = sum(p.numel() for p in text.parameters()) + sum(p.numel() for p in head.parameters())
    return {"text": text, "head": head, "texts": texts, "labels": labels, "params": params}


class PooledHead(nn.Module):
    """A linear layer on the encoder's pooled output."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, classes)

    def forward(self, encoded: dict[str, Any]) -> torch.Tensor:
        return self.linear(encoded["text"].pooled)


def run_ours(parts: dict[str, Any], s: LoopSettings, bucket: bool, accelerator: Any) -> float:
    """Seconds of ``fit`` over one epoch of ``steps`` batches."""
    from emoplug.recipe import TrainSettings
    from emoplug.train.data import Collator, Example, Loader
    from emoplug.train.loop import fit
    from emoplug.train.model import CellModel

    text, head = copy.deepcopy(parts["text"]), copy.deepcopy(parts["head"])
    model = CellModel(head, text=text)
    nan = (np.nan, np.nan, np.nan)
    examples = [Example(f"u{i}", label, nan, text=t)
                for i, (t, label) in enumerate(zip(parts["texts"], parts["labels"], strict=True))]
    collate = Collator(text.tokenize)
    train = Loader(examples, collate, s.batch_size, True, s.seed, bucket)
    dev = Loader(examples[:1], collate, s.batch_size, False)
    settings = TrainSettings(epochs=1, batch_size=s.batch_size, lr=s.lr, encoder_lr=s.lr,
                             weight_decay=0.01, warmup_ratio=0.1, grad_clip=1.0, patience=1,
                             bucketing=bucket)

    def loss(outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs, targets.labels)

    start = time.perf_counter()
    result = fit(model, loss, train, dev, settings, accelerator)
    seconds = time.perf_counter() - start
    assert result.steps == s.steps, result.steps
    return seconds


def run_trainer(parts: dict[str, Any], s: LoopSettings, work: Path) -> float:
    """Seconds of ``Trainer.train()`` for ``steps`` steps (setup outside the timing)."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    text, head = copy.deepcopy(parts["text"]), copy.deepcopy(parts["head"])

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text, self.head = text, head

        def forward(self, labels: torch.Tensor, **tokens: torch.Tensor) -> dict[str, Any]:
            logits = self.head({"text": self.text(**tokens)})
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    rows = [{"text": t, "label": label}
            for t, label in zip(parts["texts"], parts["labels"], strict=True)]

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {**text.tokenize([r["text"] for r in batch]),
                "labels": torch.tensor([r["label"] for r in batch])}

    args = TrainingArguments(
        output_dir=str(work / "hf-trainer"), per_device_train_batch_size=s.batch_size,
        max_steps=s.steps, learning_rate=s.lr, weight_decay=0.01,
        warmup_steps=int(0.1 * s.steps), lr_scheduler_type="linear", max_grad_norm=1.0,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
        remove_unused_columns=False, seed=s.seed)
    trainer = Trainer(model=Wrapped(), args=args, train_dataset=rows, data_collator=collate)
    trainer.remove_callback(PrinterCallback)  # its end-of-training line only
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    assert output.global_step == s.steps, output.global_step
    return seconds


def padding_share(parts: dict[str, Any], s: LoopSettings, bucket: bool) -> float:
    """Share of padded token positions in one epoch's training batches."""
    from emoplug.train.data import bucketed_batches

    tokenize = parts["text"].tokenize
    lengths = [len(t.split()) for t in parts["texts"]]
    padded = real = 0
    for batch in bucketed_batches(lengths, s.batch_size, s.seed, bucket):
        mask = tokenize([parts["texts"][i] for i in batch])["attention_mask"]
        padded += mask.numel()
        real += int(mask.sum())
    return float(np.round(1 - real / padded, 3))


def benchmark(s: LoopSettings, work: Path, verbose: bool = True) -> dict[str, Any]:
    """Alternate the four variants ``repeats`` times; return timings, medians and ratios."""
    from accelerate import Accelerator

    parts = build_parts(s, work)
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    variants = {
        "ours_bucketing_off": lambda: run_ours(parts, s, False, accelerator),
        "trainer": lambda: run_trainer(parts, s, work),
        "ours_bucketing_on": lambda: run_ours(parts, s, True, accelerator),
    }
    variants["ours_bucketing_off"]()  # warm-up: allocator, kernels, imports
    variants["trainer"]()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(s.repeats):
        for name, fn in variants.items():
            seconds[name].append(round(fn(), 4))
            if verbose:
                print(f"  run {repeat + 1}: {name:20s} {seconds[name][-1]:6.2f} s", flush=True)
    samples = s.steps * s.batch_size
    medians = {name: _common.median(v) for name, v in seconds.items()}
    return {
        "samples_per_epoch": samples,
        "model_parameters": parts["params"],
        "padding_share": {"bucketing_off": padding_share(parts, s, False),
                          "bucketing_on": padding_share(parts, s, True)},
        "seconds": seconds,
        "median_seconds": {k: round(v, 4) for k, v in medians.items()},
        "samples_per_s": {k: round(samples / v, 1) for k, v in medians.items()},
        "ours_vs_trainer": round(medians["trainer"] / medians["ours_bucketing_off"], 3),
        "bucketing_speedup": round(medians["ours_bucketing_off"] / medians["ours_bucketing_on"],
                                   3),
    }


def main() -> None:
    _common.offline()
    threads = _common.single_thread()
    defaults = LoopSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--out", default=None, help="default benchmarks/results/train_loop.json")
    args = parser.parse_args()
    s = LoopSettings(steps=args.steps, repeats=args.repeats, batch_size=args.batch_size)
    machine = _common.machine()
    figures = benchmark(s, _common.WORK / "train_loop")
    print(f"\n{'variant':20s} {'median s':>9s} {'samples/s':>10s}")
    for name, value in figures["median_seconds"].items():
        print(f"{name:20s} {value:9.2f} {figures['samples_per_s'][name]:10.1f}")
    print(f"ours/Trainer {figures['ours_vs_trainer']:.2f} (target >= {TARGET_VS_TRAINER}); "
          f"bucketing {figures['bucketing_speedup']:.2f}x (target >= {TARGET_BUCKETING}); "
          f"padding {figures['padding_share']}")
    _common.write_report(
        "train_loop", args.out, machine={**machine, "load_average_1min_end":
                                         _common.load_average()},
        versions=_common.versions("accelerate"),
        settings={**dataclasses.asdict(s), "encoder": "bert, tiny: true (registry)",
                  "head": "linear on the pooled output", "torch_threads": threads,
                  "max_length": 128, "order": "alternating ours(off), Trainer, ours(on)"},
        target={"ours_vs_trainer": TARGET_VS_TRAINER, "bucketing_speedup": TARGET_BUCKETING},
        meets_target={"ours_vs_trainer": figures["ours_vs_trainer"] >= TARGET_VS_TRAINER,
                      "bucketing_speedup": figures["bucketing_speedup"] >= TARGET_BUCKETING},
        results=figures)


if __name__ == "__main__":
    main()
