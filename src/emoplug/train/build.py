"""Building a job's network and decision approach from its cell config and seed."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emoplug.recipe import Job
from emoplug.train import text_stage
from emoplug.train.context import RunContext
from emoplug.train.data import targets_of
from emoplug.train.inputs import JobInputs
from emoplug.train.model import CellModel, describe_model


@dataclass
class JobModel:
    """A job's network and decision approach, built from its seed; ``record`` says what was
    built (``result.json``'s ``model``, see :func:`emoplug.train.model.describe_model`)."""

    model: CellModel
    approach: Any
    seconds: float
    record: dict[str, Any]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_model(ctx: RunContext, job: Job, inputs: JobInputs) -> JobModel:
    """The cell's network and approach, initialised from ``job.seed``. Every part is built
    from the job's own config: the feature store it reads is shared by every featurizer
    config with the same cache key, so its featurizer may carry another cell's encoder."""
    start = time.perf_counter()
    cfg = job.cell.config
    seed_everything(job.seed)
    text_module = (text_stage.build_text_module(ctx, cfg["text"], job.seed)
                   if inputs.mode == "finetune" else None)
    audio_module, input_dim = None, None
    if inputs.audio_store is not None:
        input_dim = int(inputs.splits["train"][0].audio().shape[1])
        audio_module = build_audio_module(ctx.registry.build("audio", cfg["audio"]),
                                          inputs.audio_mode, input_dim)
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
    model = CellModel(fusion, text=text_module, audio=audio_module)
    record = describe_model(model, dims, out_dim, input_dim)
    return JobModel(model, approach, time.perf_counter() - start, record)


def build_audio_module(featurizer: Any, mode: str | None, input_dim: int) -> Any:
    """The cell's audio module: the speech model with the encoder on top, trained from
    waveforms (``mode: finetune``), else the encoder over ``input_dim`` features."""
    if mode == "finetune":
        return featurizer.build_waveform_encoder()
    return featurizer.build_encoder(input_dim)


def encoder_lr(job: Job) -> dict[str, float | None]:
    """The learning rate the cell gives each pretrained encoder it trains, by modality: the
    text encoder's ``lr``, the speech model's ``encoder_lr`` (None: ``train.encoder_lr``)."""
    return {"text": (job.cell.config["text"] or {}).get("lr"),
            "audio": (job.cell.config["audio"] or {}).get("encoder_lr")}
