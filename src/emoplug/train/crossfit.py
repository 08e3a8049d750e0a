"""Out-of-fold outputs of a job's training split, for an approach whose second stage is
fitted on them (``Approach.out_of_fold_splits`` > 0).

The training split is divided into k folds grouped by speaker. For each fold, a fresh network
of the job's cell (seeded from the job's seed and the fold's index) trains on the other folds,
with the recipe's train settings and early stopping on the job's dev split, then predicts the
held-out fold. Each training utterance thus gets one prediction from a network that never saw
its speaker, as the job's own network never saw its test speakers.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from emoplug.components import Approach
from emoplug.errors import EmoplugError
from emoplug.recipe import Job
from emoplug.train.build import build_model, encoder_lr
from emoplug.train.context import RunContext
from emoplug.train.data import targets_of
from emoplug.train.inputs import JobInputs, make_loaders
from emoplug.train.loop import Outputs, fit, predict


def speaker_folds(speakers: Sequence[str], k: int) -> list[list[int]]:
    """The indices of ``speakers`` in ``min(k, distinct speakers)`` folds, each speaker in one
    fold. As scikit-learn's ``GroupKFold``: the speakers with most utterances go first, each to
    the fold with the fewest utterances so far (ties: by speaker name, then the lower fold)."""
    counts = Counter(speakers)
    k = min(k, len(counts))
    sizes = [0] * k
    fold_of: dict[str, int] = {}
    for speaker, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        fold_of[speaker] = sizes.index(min(sizes))
        sizes[fold_of[speaker]] += count
    return [[i for i, s in enumerate(speakers) if fold_of[s] == fold] for fold in range(k)]


def inner_seed(seed: int, index: int) -> int:
    """The seed of inner fold ``index``'s network: drawn from (job seed, index), so it is
    reproducible and unrelated to the seeds of other jobs."""
    return int(np.random.SeedSequence((seed, index)).generate_state(1)[0])


def out_of_fold_outputs(ctx: RunContext, job: Job, inputs: JobInputs, approach: Approach,
                        accelerator: Any, ddp: bool = False) -> tuple[Outputs, dict[str, Any]]:
    """The training split's outputs, each from the inner network that did not train on its
    speaker, in the split's order; and the record of those trainings (``folds``: k used,
    ``speakers`` of the split, ``epochs_run`` and ``best_epoch`` per inner fold,
    ``seconds``). The inner networks learn from the job's ``approach`` (prepared on the
    whole training split), so their outputs are on the scale its ``decode`` reads."""
    start = time.perf_counter()
    requested = approach.out_of_fold_splits()
    train = inputs.splits["train"]
    speakers = [ctx.by_id[e.id].speaker for e in train]
    if requested < 2:
        raise EmoplugError(f"approach '{approach.name}': out_of_fold_splits() is {requested}; "
                           "it must be 0 (in-sample outputs) or at least 2")
    if len(set(speakers)) < 2:
        raise EmoplugError(f"approach '{approach.name}' fits on out-of-fold outputs from "
                           f"speaker-grouped folds, but fold {job.fold}'s training split has "
                           f"{len(set(speakers))} speaker(s); at least 2 are needed")
    row_of = {e.id: i for i, e in enumerate(train)}
    outputs: torch.Tensor | None = None
    record: dict[str, Any] = {"folds": 0, "speakers": len(set(speakers)), "epochs_run": [],
                              "best_epoch": []}
    for index, held_out in enumerate(speaker_folds(speakers, requested)):
        held = set(held_out)
        inner_job = dataclasses.replace(job, seed=inner_seed(job.seed, index))
        inner = dataclasses.replace(inputs, splits={
            "train": [e for i, e in enumerate(train) if i not in held],
            "dev": inputs.splits["dev"], "test": [train[i] for i in held_out]})
        model = build_model(ctx, inner_job, inner).model  # its own approach goes unused
        loaders = make_loaders(ctx, inner_job, inner, model.text, accelerator.device)
        dev = loaders["dev"] if inner.splits["dev"] else None  # none: epochs chosen before
        fitted = fit(model, approach.loss, loaders["fit"], dev,
                     ctx.plan.train_settings(job.cell), accelerator, encoder_lr=encoder_lr(job),
                     ddp=ddp, epochs=inputs.epochs)
        predicted = predict(model, loaders["test"], accelerator.device, accelerator.autocast)
        if outputs is None:
            outputs = torch.full((len(train), predicted.outputs.shape[1]), float("nan"))
        outputs[[row_of[i] for i in predicted.ids]] = predicted.outputs
        record["folds"] += 1
        record["epochs_run"].append(fitted.epochs_run)
        record["best_epoch"].append(fitted.best_epoch)
    record["seconds"] = time.perf_counter() - start
    return Outputs([e.id for e in train], outputs, targets_of(train)), record
