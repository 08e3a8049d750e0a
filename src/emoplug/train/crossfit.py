"""Out-of-fold outputs of a job's training split, for an approach whose second stage is
fitted on them (``Approach.out_of_fold_splits`` > 0).

The training split is divided into k folds grouped by speaker. For each fold, a fresh network
of the job's cell (seeded from the job's seed and the fold's index) trains on the other folds,
with the recipe's train settings and early stopping on the job's dev utterances of speakers
outside the held-out fold (``inner_dev``), then predicts the held-out fold. Each training
utterance thus gets one prediction from a network that never saw its speaker, as the job's
own network never saw its test speakers.
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


def inner_dev(dev: Sequence[Any], speaker_of: dict[str, str], held_out: set[str]) -> list[Any]:
    """The dev examples an inner network stops on: the job's dev utterances whose speaker is
    not in the held-out inner fold. Under ``dev: random`` the job's dev holds utterances of
    every training speaker; stopping on those of the held-out speakers would let the inner
    network see the speakers it is meant never to see."""
    return [e for e in dev if speaker_of[e.id] not in held_out]


def out_of_fold_outputs(ctx: RunContext, job: Job, inputs: JobInputs, approach: Approach,
                        accelerator: Any, ddp: bool = False) -> tuple[Outputs, dict[str, Any]]:
    """The training split's outputs, each from the inner network that did not train on its
    speaker, in the split's order; and the record of those trainings (``folds``: k used,
    ``speakers`` of the split, ``epochs_run``, ``best_epoch`` and ``dev_size`` per inner fold,
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
                              "best_epoch": [], "dev_size": []}
    speaker_of = {e.id: ctx.by_id[e.id].speaker for e in (*train, *inputs.splits["dev"])}
    for index, held_out in enumerate(speaker_folds(speakers, requested)):
        held = set(held_out)
        dev = inner_dev(inputs.splits["dev"], speaker_of, {speakers[i] for i in held_out})
        if not dev and inputs.epochs is None:  # without epochs chosen on inner folds
            raise EmoplugError(f"fold {job.fold}: every dev utterance belongs to a speaker of "
                               f"inner fold {index}; the inner network has no dev utterance "
                               "of its own training speakers to stop on")
        inner_job = dataclasses.replace(job, seed=inner_seed(job.seed, index))
        inner = dataclasses.replace(inputs, splits={
            "train": [e for i, e in enumerate(train) if i not in held],
            "dev": dev, "test": [train[i] for i in held_out]})
        model = build_model(ctx, inner_job, inner).model  # its own approach goes unused
        loaders = make_loaders(ctx, inner_job, inner, model.text, accelerator.device)
        fitted = fit(model, approach.loss, loaders["fit"], loaders["dev"] if dev else None,
                     ctx.plan.train_settings(job.cell), accelerator, encoder_lr=encoder_lr(job),
                     ddp=ddp, epochs=None if dev else inputs.epochs)
        predicted = predict(model, loaders["test"], accelerator.device, accelerator.autocast)
        if outputs is None:
            outputs = torch.full((len(train), predicted.outputs.shape[1]), float("nan"))
        outputs[[row_of[i] for i in predicted.ids]] = predicted.outputs
        record["folds"] += 1
        record["epochs_run"].append(fitted.epochs_run)
        record["best_epoch"].append(fitted.best_epoch)
        record["dev_size"].append(len(dev))
    record["seconds"] = time.perf_counter() - start
    return Outputs([e.id for e in train], outputs, targets_of(train)), record
