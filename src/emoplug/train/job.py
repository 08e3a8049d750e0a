"""One job: build the cell's network for a fold and seed, train, evaluate, write its folder.

``jobs/<id>/`` receives ``config.json``, TensorBoard events (``tb/``), ``predictions.csv`` and,
last and atomically, ``result.json``.
"""

from __future__ import annotations

import csv
import platform
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

import emoplug
from emoplug.components import Approach
from emoplug.metrics import classification_metrics, dimensional_metrics
from emoplug.recipe import Job
from emoplug.train import text_stage
from emoplug.train.context import RunContext
from emoplug.train.data import Collator, Example, Loader
from emoplug.train.loop import Outputs, fit, predict
from emoplug.train.model import CellModel
from emoplug.train.packed import DeviceInputs, device_inputs_enabled
from emoplug.types import AVD_NAMES, Decoded, Targets

RESULT_VERSION = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def job_dir(ctx: RunContext, job: Job) -> Path:
    return ctx.output_dir / "jobs" / job.id


def text_mode(job: Job) -> str | None:
    text = job.cell.config["text"]
    return None if text is None else text.get("mode", "finetune")


def _examples(ctx: RunContext, job: Job, ids: tuple[str, ...], text_cache, audio_store,
              dropped: dict[str, int]) -> list[Example]:
    """The split's examples; utterances missing an input the cell needs are dropped and counted."""
    out = []
    for utt_id in ids:
        u = ctx.by_id[utt_id]
        if job.cell.text is not None and not u.text:
            dropped["no text"] = dropped.get("no text", 0) + 1
            continue
        if job.cell.audio is not None and (not u.audio or not audio_store.available(u)):
            dropped["no audio features"] = dropped.get("no audio features", 0) + 1
            continue
        label = ctx.labels.index(u.label) if u.label in ctx.labels else -1
        example = Example(u.id, label, u.avd or (np.nan, np.nan, np.nan))
        if job.cell.text is not None:
            if text_cache is not None:
                example.text_cached = text_cache[u.id]
            else:
                example.text = u.text
        if job.cell.audio is not None:
            example.audio = audio_store.loader(u)
            example.frames = audio_store.frames[u.id]
        out.append(example)
    return out


def _device_inputs(ctx: RunContext, splits: dict[str, list[Example]], text_key: str | None,
                   audio_store, device: torch.device) -> DeviceInputs | None:
    """The job's cached inputs packed on ``device``, where that is enabled (``packed.py``).
    Out of device memory, packing is given up for the process with one warning: batches
    are then padded on the host, which gives the same results."""
    if ctx.device_inputs_failed or not device_inputs_enabled(device):
        return None
    inputs = DeviceInputs()
    try:
        if audio_store is not None:
            utterances = [ctx.by_id[e.id] for examples in splits.values() for e in examples]
            inputs.audio = audio_store.packed(utterances, device)
        if text_key is not None:  # staged or frozen outputs, held in ctx.text_outputs[text_key]
            inputs.text_sequence, inputs.text_pooled = ctx.packed_text(text_key, device)
    except torch.cuda.OutOfMemoryError as exc:
        failed = (str(exc).splitlines() or [type(exc).__name__])[0]
    else:
        return inputs
    del inputs  # outside the except block: its traceback no longer holds the partial banks
    ctx.drop_packed()
    ctx.device_inputs_failed = failed
    print(f"emoplug: warning: packing inputs on {device} ran out of memory ({failed}); "
          "padding batches on the host from now on (EMOPLUG_DEVICE_INPUTS=off skips trying)",
          file=sys.stderr)
    return None


def run_job(ctx: RunContext, job: Job, accelerator: Any, ddp: bool = False,
            on_epoch=None) -> dict[str, Any]:
    """Train and evaluate ``job``; return what ``result.json`` holds (``status`` done)."""
    start = time.perf_counter()
    settings = ctx.plan.recipe.train
    cfg = job.cell.config
    fold = ctx.folds[job.fold]
    mode = text_mode(job)

    text_cache, text_key, text_module, stage = None, None, None, None
    if mode == "staged":
        stage = text_stage.stage_id(ctx, cfg["text"], job.fold, job.seed)
        text_cache, text_key = text_stage.load_stage(ctx, stage), text_stage.stage_key(stage)
    elif mode == "frozen":
        text_cache = text_stage.frozen_outputs(ctx, cfg["text"], accelerator.device)
        text_key = text_stage.frozen_key(ctx, cfg["text"])
    audio_store = ctx.features(cfg["audio"]) if cfg["audio"] is not None else None

    seed_everything(job.seed)
    dropped: dict[str, int] = {}
    splits = {name: _examples(ctx, job, ids, text_cache, audio_store, dropped)
              for name, ids in (("train", fold.train), ("dev", fold.dev), ("test", fold.test))}
    for name, examples in splits.items():
        if not examples:
            raise emoplug.EmoplugError(f"fold {job.fold}: the {name} split has no usable "
                                       f"utterances for {job.cell.label}")
    if mode == "finetune":
        text_module = text_stage.build_text_module(ctx, cfg["text"], job.seed)
    audio_module = None
    if audio_store is not None:
        input_dim = splits["train"][0].audio().shape[1]
        audio_module = audio_store.featurizer.build_encoder(input_dim)

    train_targets = targets_of(splits["train"])
    approach = ctx.registry.build("approach", cfg["approach"])
    out_dim = approach.prepare(ctx.labels, ctx.corpus.avd_scale, train_targets)
    dims: dict[str, int] = {}
    if cfg["text"] is not None:
        dims["text"] = (int(next(iter(text_cache.values()))[1].shape[0])
                        if text_cache is not None else text_module.dim)
    if audio_module is not None:
        dims["audio"] = audio_module.dim
    fusion = ctx.registry.build("fusion", cfg["fusion"]).build(dims, out_dim)
    model = CellModel(fusion, text=text_module, audio=audio_module)

    collate = Collator(text_module.tokenize if text_module is not None else None,
                       _device_inputs(ctx, splits, text_key, audio_store, accelerator.device))
    loaders = {name: Loader(ex, collate, settings.batch_size, train=False)
               for name, ex in splits.items()}
    train_loader = Loader(splits["train"], collate, settings.batch_size, True, job.seed,
                          settings.bucketing)
    setup_s = time.perf_counter() - start
    result = fit(model, approach.loss, train_loader, loaders["dev"], settings, accelerator,
                 encoder_lr=(cfg["text"] or {}).get("lr"), ddp=ddp, on_epoch=on_epoch)

    eval_start = time.perf_counter()
    device = accelerator.device
    if type(approach).fit is not Approach.fit:  # a second stage fitted on train outputs
        train_out = predict(model, loaders["train"], device, accelerator.autocast)
        approach.fit(train_out.outputs, train_out.targets)
    outputs = {"dev": result.dev_outputs or predict(model, loaders["dev"], device,
                                                    accelerator.autocast),
               "test": predict(model, loaders["test"], device, accelerator.autocast)}
    decoded = {name: approach.decode(o.outputs, o.targets) for name, o in outputs.items()}
    metrics = {name: evaluate(o, decoded[name], ctx.labels) for name, o in outputs.items()}
    eval_s = time.perf_counter() - eval_start

    return {
        "status": "done",
        "result_version": RESULT_VERSION,
        "job": job.id,
        "cell": job.cell.id,
        "cell_label": job.cell.label,
        "names": {"text": job.cell.text, "audio": job.cell.audio, "fusion": job.cell.fusion,
                  "approach": job.cell.approach},
        "modalities": list(job.cell.modalities),
        "fold": job.fold,
        "seed": job.seed,
        "text_mode": mode,
        "stage": stage,
        "protocol": {**ctx.plan.protocol, **{k: v for k, v in fold.meta.items()
                                            if isinstance(v, (str, int, float, bool))}},
        "labels": ctx.labels,
        "metrics": metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "dev_loss": result.best_dev_loss,
        "history": result.history,
        "sizes": {name: len(ex) for name, ex in splits.items()},
        "dropped": dropped,
        "timings": {"setup_s": setup_s, "train_s": result.seconds, "eval_s": eval_s,
                    "total_s": time.perf_counter() - start},
        "device": str(device),
        "process": {"index": ctx.rank, "count": ctx.world},
        "mixed_precision": settings.mixed_precision,
        "versions": versions(),
        "_predictions": (outputs["test"], decoded["test"]),
        "_model": model,
        "_approach": approach,
    }


def targets_of(examples: list[Example]) -> Targets:
    """Gold targets of a split, without building model inputs."""
    return Targets(torch.tensor([e.label for e in examples], dtype=torch.long),
                   torch.tensor([e.avd for e in examples], dtype=torch.float32))


def evaluate(out: Outputs, decoded: Decoded, labels: list[str]) -> dict[str, Any]:
    """Classification metrics on labelled rows; dimensional ones when AVD was predicted."""
    gold = out.targets.labels.numpy()
    labelled = gold >= 0
    metrics: dict[str, Any] = {"n": int(len(gold))}
    if labelled.any():
        metrics.update(classification_metrics(gold[labelled], decoded.labels[labelled], labels))
    if decoded.avd is not None:
        gold_avd = out.targets.avd.numpy()
        if np.isfinite(gold_avd).any():
            metrics.update(dimensional_metrics(gold_avd, decoded.avd))
    return metrics


def write_predictions(path: Path, out: Outputs, decoded: Decoded, labels: list[str]) -> None:
    """``predictions.csv``: id, gold, predicted, per-class scores, gold/predicted AVD."""
    header = ["id", "gold", "predicted", *[f"p_{c}" for c in labels],
              *[f"gold_{d}" for d in AVD_NAMES], *[f"pred_{d}" for d in AVD_NAMES]]
    order = np.argsort(out.ids, kind="stable")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in order:
            gold = int(out.targets.labels[i])
            row = [out.ids[i], labels[gold] if gold >= 0 else "", labels[int(decoded.labels[i])]]
            row += ([f"{p:.6f}" for p in decoded.probs[i]] if decoded.probs is not None
                    else [""] * len(labels))
            row += [_num(v) for v in out.targets.avd[i].tolist()]
            row += ([_num(v) for v in decoded.avd[i]] if decoded.avd is not None else [""] * 3)
            writer.writerow(row)


def _num(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6f}"


def versions() -> dict[str, str]:
    import transformers

    return {"emoplug": emoplug.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def failure(job: Job, exc: BaseException, started: float) -> dict[str, Any]:
    """What ``result.json`` holds for a job that raised."""
    return {"status": "failed", "result_version": RESULT_VERSION, "job": job.id,
            "cell": job.cell.id, "cell_label": job.cell.label, "fold": job.fold,
            "seed": job.seed, "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
            "traceback": traceback.format_exc(),
            "timings": {"total_s": time.perf_counter() - started}, "versions": versions()}
