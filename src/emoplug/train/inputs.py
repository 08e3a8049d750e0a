"""A job's inputs: the fold's examples with their cached text and audio (or the waveforms
of a speech model the job fine-tunes), and the loaders.

Utterances lacking an input the cell needs are dropped and counted. Where it is enabled
(``packed.py``), the cached inputs are packed on the device once and batches are cut from
them there.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emoplug.errors import EmoplugError
from emoplug.recipe import Job, audio_mode
from emoplug.train import audio_stage, text_stage
from emoplug.train.context import RunContext
from emoplug.train.controls import apply_control
from emoplug.train.data import Collator, Example, Loader
from emoplug.train.packed import DeviceInputs, device_inputs_enabled


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
    #: epochs chosen beforehand (on inner folds): a fit without a dev split trains this many
    epochs: int | None = None
    #: audio mode: frozen, finetune (``audio_store`` holds waveforms), staged; None without
    audio_mode: str | None = None
    audio_stage: str | None = None  # the id of the speech stage the job reads


def text_mode(job: Job) -> str | None:
    """How the job's cell uses its text encoder (``finetune``, ``staged``, ``frozen``)."""
    text = job.cell.config["text"]
    return None if text is None else text.get("mode", "finetune")


def load_inputs(ctx: RunContext, job: Job, device: torch.device) -> JobInputs:
    """The job's splits as examples. Raises when a split ends up empty."""
    cfg = job.cell.config
    mode = text_mode(job)
    text_cache, text_key, stage = None, None, None
    if mode == "staged":
        stage = text_stage.job_stage_id(ctx, job)
        text_cache, text_key = text_stage.load_stage(ctx, stage), text_stage.stage_key(stage)
    elif mode == "frozen":
        text_cache = text_stage.frozen_outputs(ctx, cfg["text"], device)
        text_key = text_stage.frozen_key(ctx, cfg["text"])
    audio, audio_sid, audio_store = audio_mode(cfg["audio"]), None, None
    if audio == "finetune":
        audio_store = ctx.waveforms(cfg["audio"])
    elif audio == "staged":
        audio_sid = audio_stage.job_stage_id(ctx, job)
        audio_store = audio_stage.stage_features(ctx, audio_sid)
    elif audio is not None:
        audio_store = ctx.features(cfg["audio"])
    transcripts = ctx.transcripts(cfg["text"]) if cfg["text"] is not None else {}
    fold = ctx.folds[job.fold]
    dropped: dict[str, int] = {}
    splits = {name: _examples(ctx, job, ids, transcripts, text_cache, audio_store, dropped)
              for name, ids in (("train", fold.train), ("dev", fold.dev), ("test", fold.test))}
    for name, examples in splits.items():
        if not examples and not (name == "dev" and fold.meta.get("dev") == "inner_folds"):
            raise EmoplugError(f"fold {job.fold}: the {name} split has no utterances "
                               f"with {' and '.join(job.cell.modalities)}")
    splits["train"] = apply_control(job.cell.control, splits["train"], job.seed, job.fold)
    return JobInputs(mode, stage, text_cache, text_key, audio_store, splits, dropped,
                     audio_mode=audio, audio_stage=audio_sid)


def _examples(ctx: RunContext, job: Job, ids: tuple[str, ...], transcripts: dict[str, str],
              text_cache, audio_store, dropped: dict[str, int]) -> list[Example]:
    """The split's examples; utterances missing an input the cell needs are dropped and
    counted. ``transcripts``: the texts of the cell's transcript source, by id."""
    out = []
    for utt_id in ids:
        u = ctx.by_id[utt_id]
        if job.cell.text is not None and utt_id not in transcripts:
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
                example.text = transcripts[utt_id]
        if job.cell.audio is not None:
            example.audio = audio_store.loader(u)
            example.frames = audio_store.frames[u.id]
        out.append(example)
    return out


def make_loaders(ctx: RunContext, job: Job, inputs: JobInputs, text_module: Any,
                 device: torch.device) -> dict[str, Loader]:
    """Training (bucketed, shuffled by ``job.seed``) and evaluation loaders of the splits."""
    settings = ctx.plan.train_settings(job.cell)
    collate = Collator(text_module.tokenize if text_module is not None else None,
                       _device_inputs(ctx, inputs.splits, inputs.text_key, inputs.audio_store,
                                      device))
    loaders = {name: Loader(ex, collate, settings.batch_size, train=False)
               for name, ex in inputs.splits.items()}
    loaders["fit"] = Loader(inputs.splits["train"], collate, settings.batch_size, True,
                            job.seed, settings.bucketing)
    return loaders


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
