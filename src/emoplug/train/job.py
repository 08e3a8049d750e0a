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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import emoplug
from emoplug.components import Approach
from emoplug.metrics import classification_metrics, dimensional_metrics
from emoplug.recipe import Job
from emoplug.train import text_stage
from emoplug.train.cohort import RngStreams
from emoplug.train.context import RunContext
from emoplug.train.controls import apply_control
from emoplug.train.data import Collator, Example, Loader, targets_of
from emoplug.train.loop import CellTrainer, FitResult, Outputs, fit, predict, train_cohort
from emoplug.train.model import CellModel
from emoplug.train.packed import DeviceInputs, device_inputs_enabled
from emoplug.types import AVD_NAMES, Decoded

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


@dataclass
class JobInputs:
    """A job's examples and where its cached inputs live; shared by the jobs of a cohort."""

    mode: str | None  # text mode: finetune, staged, frozen; None without text
    stage: str | None
    text_cache: dict[str, tuple[np.ndarray, np.ndarray]] | None
    text_key: str | None
    audio_store: Any
    splits: dict[str, list[Example]]
    dropped: dict[str, int]


@dataclass
class JobModel:
    """A job's network and decision approach, built from its seed."""

    model: CellModel
    approach: Any
    seconds: float


def load_inputs(ctx: RunContext, job: Job, device: torch.device) -> JobInputs:
    """The job's splits as examples; utterances lacking an input the cell needs are dropped
    and counted. Raises when a split ends up empty."""
    cfg = job.cell.config
    mode = text_mode(job)
    text_cache, text_key, stage = None, None, None
    if mode == "staged":
        stage = text_stage.job_stage_id(ctx, job)
        text_cache, text_key = text_stage.load_stage(ctx, stage), text_stage.stage_key(stage)
    elif mode == "frozen":
        text_cache = text_stage.frozen_outputs(ctx, cfg["text"], device)
        text_key = text_stage.frozen_key(ctx, cfg["text"])
    audio_store = ctx.features(cfg["audio"]) if cfg["audio"] is not None else None
    fold = ctx.folds[job.fold]
    dropped: dict[str, int] = {}
    splits = {name: _examples(ctx, job, ids, text_cache, audio_store, dropped)
              for name, ids in (("train", fold.train), ("dev", fold.dev), ("test", fold.test))}
    for name, examples in splits.items():
        if not examples:
            raise emoplug.EmoplugError(f"fold {job.fold}: the {name} split has no utterances "
                                       f"with {' and '.join(job.cell.modalities)}")
    splits["train"] = apply_control(job.cell.control, splits["train"], job.seed, job.fold)
    return JobInputs(mode, stage, text_cache, text_key, audio_store, splits, dropped)


def build_model(ctx: RunContext, job: Job, inputs: JobInputs) -> JobModel:
    """The cell's network and approach, initialised from ``job.seed``."""
    start = time.perf_counter()
    cfg = job.cell.config
    seed_everything(job.seed)
    text_module = (text_stage.build_text_module(ctx, cfg["text"], job.seed)
                   if inputs.mode == "finetune" else None)
    audio_module = None
    if inputs.audio_store is not None:
        input_dim = inputs.splits["train"][0].audio().shape[1]
        audio_module = inputs.audio_store.featurizer.build_encoder(input_dim)
    approach = ctx.registry.build("approach", cfg["approach"])
    out_dim = approach.prepare(ctx.labels, ctx.corpus.avd_scale,
                               targets_of(inputs.splits["train"]))
    dims: dict[str, int] = {}
    if cfg["text"] is not None:
        dims["text"] = (int(next(iter(inputs.text_cache.values()))[1].shape[0])
                        if inputs.text_cache is not None else text_module.dim)
    if audio_module is not None:
        dims["audio"] = audio_module.dim
    fusion = ctx.registry.build("fusion", cfg["fusion"]).build(dims, out_dim)
    return JobModel(CellModel(fusion, text=text_module, audio=audio_module), approach,
                    time.perf_counter() - start)


def make_loaders(ctx: RunContext, job: Job, inputs: JobInputs, text_module: Any,
                 device: torch.device) -> dict[str, Loader]:
    """Training (bucketed, shuffled by ``job.seed``) and evaluation loaders of the splits."""
    settings = ctx.plan.recipe.train
    collate = Collator(text_module.tokenize if text_module is not None else None,
                       _device_inputs(ctx, inputs.splits, inputs.text_key, inputs.audio_store,
                                      device))
    loaders = {name: Loader(ex, collate, settings.batch_size, train=False)
               for name, ex in inputs.splits.items()}
    loaders["fit"] = Loader(inputs.splits["train"], collate, settings.batch_size, True,
                            job.seed, settings.bucketing)
    return loaders


def evaluate_job(ctx: RunContext, job: Job, inputs: JobInputs, built: JobModel,
                 loaders: dict[str, Loader], fitted: FitResult, accelerator: Any,
                 ddp: bool = False) -> tuple[dict[str, Outputs], dict[str, Decoded],
                                             dict[str, Any]]:
    """Fit the approach's second stage if it has one (on out-of-fold outputs of the training
    split where it asks for them: ``metrics["crossfit"]`` records those trainings), predict
    dev and test, score them."""
    device, autocast = accelerator.device, accelerator.autocast
    model, approach = built.model, built.approach
    crossfit = None
    if _fit_reads_outputs(approach) and approach.out_of_fold_splits():
        from emoplug.train.crossfit import out_of_fold_outputs  # crossfit builds on this module

        train_out, crossfit = out_of_fold_outputs(ctx, job, inputs, approach, accelerator, ddp)
        approach.fit(train_out.outputs, train_out.targets)
    elif predicts_training_set(approach):
        train_out = predict(model, loaders["train"], device, autocast)
        approach.fit(train_out.outputs, train_out.targets)
    elif type(approach).fit is not Approach.fit:  # a second stage fitted on targets alone
        approach.fit(None, loaders["train"].targets())
    outputs = {"dev": fitted.dev_outputs or predict(model, loaders["dev"], device, autocast),
               "test": predict(model, loaders["test"], device, autocast)}
    decoded = {name: approach.decode(o.outputs, o.targets) for name, o in outputs.items()}
    metrics = {name: evaluate(o, decoded[name], ctx.labels) for name, o in outputs.items()}
    if crossfit is not None:
        metrics["crossfit"] = crossfit
    return outputs, decoded, metrics


def predicts_training_set(approach: Approach) -> bool:
    """Whether a job's network predicts its own training set after training: only for an
    approach whose second stage (``fit``) reads in-sample outputs."""
    return _fit_reads_outputs(approach) and not approach.out_of_fold_splits()


def _fit_reads_outputs(approach: Approach) -> bool:
    return type(approach).fit is not Approach.fit and approach.fit_uses_outputs()


def run_job(ctx: RunContext, job: Job, accelerator: Any, ddp: bool = False,
            on_epoch=None) -> dict[str, Any]:
    """Train and evaluate ``job``; return what ``result.json`` holds (``status`` done)."""
    start = time.perf_counter()
    inputs = load_inputs(ctx, job, accelerator.device)
    built = build_model(ctx, job, inputs)
    loaders = make_loaders(ctx, job, inputs, built.model.text, accelerator.device)
    setup_s = time.perf_counter() - start
    result = fit(built.model, built.approach.loss, loaders["fit"], loaders["dev"],
                 ctx.plan.recipe.train, accelerator, encoder_lr=encoder_lr(job), ddp=ddp,
                 on_epoch=on_epoch)
    eval_start = time.perf_counter()
    evaluated = evaluate_job(ctx, job, inputs, built, loaders, result, accelerator, ddp)
    timings = {"setup_s": setup_s, "train_s": result.seconds,
               "eval_s": time.perf_counter() - eval_start,
               "total_s": time.perf_counter() - start}
    return _record(ctx, job, inputs, built, result, evaluated, timings, accelerator, 1)


def run_cohort(ctx: RunContext, jobs: list[Job], accelerator: Any,
               on_epoch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Train the jobs of one cohort (equal ``cohort_key``: the same inputs, no text encoder
    to fine-tune) in lockstep, each on its own random streams, so each result is the one
    ``run_job`` gives. Returns what each job's ``result.json`` holds, failures included:
    a job failing stops only itself; a failure of the shared work fails those still running."""
    assert all(text_mode(job) != "finetune" for job in jobs), "fine-tuning jobs run alone"
    start = time.perf_counter()
    try:
        inputs = load_inputs(ctx, jobs[0], accelerator.device)
        loaders = make_loaders(ctx, jobs[0], inputs, None, accelerator.device)
    except Exception as exc:
        spent = (time.perf_counter() - start) / len(jobs)
        return {job.id: failure(job, exc, spent) for job in jobs}
    shared_s = (time.perf_counter() - start) / len(jobs)
    results: dict[str, dict[str, Any]] = {}
    members = []
    for job in jobs:
        built = None
        try:
            built = build_model(ctx, job, inputs)
            rng = RngStreams(accelerator.device)  # the job's streams as they are after building
            trainer = CellTrainer(built.model, built.approach.loss, ctx.plan.recipe.train,
                                  accelerator, len(loaders["fit"]), ctx.plan.recipe.train.epochs,
                                  encoder_lr=encoder_lr(job), on_epoch=on_epoch.get(job.id),
                                  rng=rng)
        except Exception as exc:
            results[job.id] = failure(job, exc, shared_s + (built.seconds if built else 0.0))
            continue
        members.append((job, built, rng, trainer))
    try:
        train_cohort([m[3] for m in members], loaders["fit"], loaders["dev"], accelerator.device)
    except Exception as exc:  # the shared batches failed: every member still training fails
        for job, built, _, trainer in members:
            if trainer.error is None:
                results[job.id] = failure(job, exc, shared_s + built.seconds + trainer.seconds)
        members = [m for m in members if m[3].error is not None]
    for job, built, rng, trainer in members:
        spent = shared_s + built.seconds + trainer.seconds
        if trainer.error is not None:
            results[job.id] = failure(job, trainer.error, spent, trainer.error_traceback)
            continue
        eval_start = time.perf_counter()
        try:
            result = trainer.finish()
            with rng.active(host=True):
                evaluated = evaluate_job(ctx, job, inputs, built, loaders, result,
                                         accelerator)
            eval_s = time.perf_counter() - eval_start
            timings = {"setup_s": shared_s + built.seconds, "train_s": result.seconds,
                       "eval_s": eval_s, "total_s": spent + eval_s}
            results[job.id] = _record(ctx, job, inputs, built, result, evaluated, timings,
                                      accelerator, len(jobs))
        except Exception as exc:
            results[job.id] = failure(job, exc, spent + time.perf_counter() - eval_start)
    return results


def encoder_lr(job: Job) -> float | None:
    """The learning rate the cell gives its text encoder (None: ``train.encoder_lr``)."""
    return (job.cell.config["text"] or {}).get("lr")


def _record(ctx: RunContext, job: Job, inputs: JobInputs, built: JobModel, result: FitResult,
            evaluated: tuple[dict[str, Outputs], dict[str, Decoded], dict[str, Any]],
            timings: dict[str, float], accelerator: Any, cohort: int) -> dict[str, Any]:
    """What ``result.json`` holds for a finished job (plus the ``_``-keys the runner writes
    to other files)."""
    outputs, decoded, metrics = evaluated
    fold = ctx.folds[job.fold]
    return {
        "status": "done",
        "result_version": RESULT_VERSION,
        "job": job.id,
        "cell": job.cell.id,
        "cell_label": job.cell.label,
        "names": {"text": job.cell.text, "audio": job.cell.audio, "fusion": job.cell.fusion,
                  "approach": job.cell.approach, "protocol": job.cell.protocol},
        "modalities": list(job.cell.modalities),
        "fold": job.fold,
        "seed": job.seed,
        "text_mode": inputs.mode,
        "stage": inputs.stage,
        "control": job.cell.control,
        "protocol": {**ctx.plan.protocol_of(job.cell),
                     **{k: v for k, v in fold.meta.items()
                        if isinstance(v, (str, int, float, bool))}},
        "audit": fold.meta.get("audit"),
        "labels": ctx.labels,
        "label_counts": {name: label_counts(ex, len(ctx.labels))
                         for name, ex in inputs.splits.items()},
        "avd_scale": list(ctx.corpus.avd_scale),
        "metrics": metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "dev_loss": result.best_dev_loss,
        "history": result.history,
        "stopping": result.stopping,
        "sizes": {name: len(ex) for name, ex in inputs.splits.items()},
        "dropped": inputs.dropped,
        "timings": timings,
        "cohort": cohort,
        "device": str(accelerator.device),
        "process": {"index": ctx.rank, "count": ctx.world},
        "mixed_precision": ctx.plan.recipe.train.mixed_precision,
        "versions": versions(),
        "_predictions": (outputs["test"], decoded["test"]),
        "_model": built.model,
        "_approach": built.approach,
    }


def label_counts(examples: list[Example], n_labels: int) -> list[int]:
    """Labelled examples per class index (a permutation of the targets leaves these as the
    gold counts)."""
    labels = np.array([e.label for e in examples], dtype=np.int64)
    return np.bincount(labels[labels >= 0], minlength=n_labels).tolist()


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


def failure(job: Job, exc: BaseException, seconds: float,
            traceback_text: str | None = None) -> dict[str, Any]:
    """What ``result.json`` holds for a job that raised after ``seconds`` of work
    (``traceback_text``: the traceback, when it was formatted before ``exc`` let go of it)."""
    return {"status": "failed", "result_version": RESULT_VERSION, "job": job.id,
            "cell": job.cell.id, "cell_label": job.cell.label, "fold": job.fold,
            "seed": job.seed, "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
            "traceback": traceback_text or "".join(traceback.format_exception(exc)),
            "timings": {"total_s": seconds}, "versions": versions()}
