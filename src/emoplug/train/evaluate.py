"""Evaluating a trained job: the approach's second stage, dev and test predictions, metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from emoplug.components import Approach
from emoplug.metrics import classification_metrics, dimensional_metrics
from emoplug.recipe import Job
from emoplug.train.build import JobModel
from emoplug.train.context import RunContext
from emoplug.train.data import Loader
from emoplug.train.inputs import JobInputs
from emoplug.train.loop import FitResult, Outputs, predict
from emoplug.train.outcome import Evaluated
from emoplug.types import Decoded


def evaluate_job(ctx: RunContext, job: Job, inputs: JobInputs, built: JobModel,
                 loaders: dict[str, Loader], fitted: FitResult, accelerator: Any,
                 ddp: bool = False, splits: tuple[str, ...] = ("dev", "test")) -> Evaluated:
    """Fit the approach's second stage if it has one (on out-of-fold outputs of the training
    split where it asks for them: ``metrics["crossfit"]`` records those trainings), predict
    ``splits`` (dev: the fit's kept dev outputs when it has them), score them."""
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
    outputs = {name: (fitted.dev_outputs if name == "dev" and fitted.dev_outputs is not None
                      else predict(model, loaders[name], device, autocast)) for name in splits}
    decoded = {name: approach.decode(o.outputs, o.targets) for name, o in outputs.items()}
    metrics = {name: split_metrics(o, decoded[name], ctx.labels) for name, o in outputs.items()}
    if crossfit is not None:
        metrics["crossfit"] = crossfit
    return outputs, decoded, metrics


def predicts_training_set(approach: Approach) -> bool:
    """Whether a job's network predicts its own training set after training: only for an
    approach whose second stage (``fit``) reads in-sample outputs."""
    return _fit_reads_outputs(approach) and not approach.out_of_fold_splits()


def _fit_reads_outputs(approach: Approach) -> bool:
    return type(approach).fit is not Approach.fit and approach.fit_uses_outputs()


def split_metrics(out: Outputs, decoded: Decoded, labels: list[str]) -> dict[str, Any]:
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
