"""Nested selection on inner folds (``dev: inner_folds`` in a protocol).

Instead of one fixed dev split, the fold's training part is divided into k folds grouped by
speaker (as :func:`emoplug.train.crossfit.speaker_folds`). For each, a network of the job's
cell trains on the others, early-stopped on the held-out inner speakers, and is scored
there (the approach's second stage fitted as for any job). The early-stopping epoch for the
refit is the median of the inner best epochs, and the dev metrics are the mean over the inner
folds. The job then trains once on all its training speakers for that many epochs, with no
dev split, and is scored on test. Nothing here sees the test split: the inner inputs hold
the training part only.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emoplug.recipe import Job
from emoplug.train.build import build_model, encoder_lr
from emoplug.train.context import RunContext
from emoplug.train.crossfit import inner_seed, speaker_folds
from emoplug.train.evaluate import evaluate_job
from emoplug.train.inputs import JobInputs, make_loaders
from emoplug.train.loop import fit

#: told after each inner fold: (inner fold index, its dev metrics)
OnInner = Callable[[int, dict[str, Any]], None]


@dataclass
class InnerSelection:
    """What the inner folds chose: the refit's ``epochs``, the mean ``dev`` metrics, and the
    ``record`` for ``result.json`` (``selection``)."""

    epochs: int
    dev: dict[str, Any]
    record: dict[str, Any]


def inner_folds_of(ctx: RunContext, job: Job) -> int | None:
    """How many inner folds the job's fold selects on; None for a fixed dev split."""
    meta = ctx.folds[job.fold].meta
    return int(meta["inner_folds"]) if meta.get("dev") == "inner_folds" else None


def select_on_inner_folds(ctx: RunContext, job: Job, inputs: JobInputs, accelerator: Any,
                          k: int, on_inner: OnInner | None = None) -> InnerSelection:
    """Train and score the job's cell on each of ``k`` speaker-grouped inner folds of its
    training split (``on_inner`` is told each fold's dev metrics as it ends, so a tuning
    pruner can stop a trial early)."""
    train = inputs.splits["train"]
    speakers = [ctx.by_id[e.id].speaker for e in train]
    settings = ctx.plan.train_settings(job.cell)
    record: dict[str, Any] = {"kind": "inner_folds", "k": 0, "held_out_speakers": [],
                              "best_epoch": [], "epochs_run": [], "dev_ua": []}
    metrics: list[dict[str, Any]] = []
    for index, held_out in enumerate(speaker_folds(speakers, k)):
        held = set(held_out)
        inner_job = dataclasses.replace(job, seed=inner_seed(job.seed, index))
        inner = dataclasses.replace(inputs, splits={
            "train": [e for i, e in enumerate(train) if i not in held],
            "dev": [train[i] for i in held_out], "test": []})
        built = build_model(ctx, inner_job, inner)
        loaders = make_loaders(ctx, inner_job, inner, built.model.text, accelerator.device)
        fitted = fit(built.model, built.approach.loss, loaders["fit"], loaders["dev"],
                     settings, accelerator, encoder_lr=encoder_lr(job))
        _, _, scored = evaluate_job(ctx, inner_job, inner, built, loaders, fitted, accelerator,
                                    splits=("dev",))
        metrics.append({**scored["dev"], "loss": fitted.best_dev_loss})
        record["k"] += 1
        record["held_out_speakers"].append(sorted({speakers[i] for i in held_out}))
        record["best_epoch"].append(fitted.best_epoch)
        record["epochs_run"].append(fitted.epochs_run)
        record["dev_ua"].append(scored["dev"].get("ua"))
        if on_inner is not None:
            on_inner(index, scored["dev"])
    epochs = max(1, round(statistics.median(record["best_epoch"])))
    record["epochs"] = epochs
    return InnerSelection(epochs, mean_metrics(metrics), record)


def mean_metrics(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each number the metric dicts share (``n``: the sum); other entries (per
    class lists, confusion matrices) are left out."""
    out: dict[str, Any] = {}
    for key in metrics[0]:
        values = [m.get(key) for m in metrics]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = sum(values) if key == "n" else sum(values) / len(values)
    out["inner_folds"] = len(metrics)
    return out
