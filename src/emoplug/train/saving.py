"""Saving a job's trained model (``train.save: best``) as a self-contained folder.

``jobs/<id>/model/`` holds only JSON and safetensors, never pickles (the format and its
names: :mod:`emoplug.model_folder`):

- ``model.json``: ``format_version``, the label set, the AVD scale, the resolved job config,
  every component's config (the audio featurizer's settings included), the sizes the modules
  are rebuilt with and the approach's ``state_dict`` (AVD statistics, a two-stage mapper);
- ``model.safetensors``: the cell network's weights (audio encoder, fusion) without the text
  encoder and without a fine-tuned speech model;
- ``audio/`` (audio ``mode: finetune`` or ``staged``): the fine-tuned speech model as its
  featurizer's ``save_waveform_encoder`` writes it (``wav2vec``: a Hugging Face checkpoint
  folder); for ``staged``, the stage's (kept under ``stages/<id>/encoder/``, linked or
  copied here);
- ``text/`` (cells with text): the text encoder as its component's ``save`` writes it (the
  bundled transformers: a Hugging Face checkpoint folder). Which encoder depends on the
  text mode: ``finetune``, the one trained inside the cell; ``staged``, the stage's
  fine-tuned encoder (kept under ``stages/<id>/encoder/`` and linked or copied here);
  ``frozen``, the pretrained encoder as the run built it.

:mod:`emoplug.predict` reads the folder back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import emoplug
from emoplug.errors import EmoplugError
from emoplug.files import atomic_folder, link_or_copy_tree, write_json_atomic
from emoplug.model_folder import (
    AUDIO_DIR,
    FORMAT_VERSION,
    MODEL_JSON,
    TEXT_DIR,
    TEXT_MODULE_PREFIX,
    WEIGHTS,
)
from emoplug.recipe import Job, audio_mode
from emoplug.train import audio_stage, text_stage
from emoplug.train.context import RunContext
from emoplug.train.inputs import text_mode
from emoplug.train.model import pretrained_keys
from emoplug.train.outcome import versions
from emoplug.types import AVD_NAMES


def _link_speech_stage(ctx: RunContext, job: Job, folder: Path) -> None:
    """The fine-tuned speech model of the stage ``job`` read, linked or copied to ``folder``."""
    sid = audio_stage.job_stage_id(ctx, job)
    source = audio_stage.stage_path(ctx, sid) / audio_stage.STAGE_ENCODER
    if not source.is_dir():
        raise EmoplugError(f"job {job.id}: speech stage {sid} kept no model (it ran without "
                           f"train.save: best); delete stages/{sid} and run again")
    link_or_copy_tree(source, folder)


def _audio_input_dim(ctx: RunContext, job: Job) -> int:
    """The feature width the audio encoder was built for (from a training utterance)."""
    sid = audio_stage.job_stage_id(ctx, job)
    store = (ctx.features(job.cell.config["audio"]) if sid is None
             else audio_stage.stage_features(ctx, sid))
    for utt_id in ctx.folds[job.fold].train:
        features = store.compute(ctx.by_id[utt_id])
        if features is not None:
            return int(features.shape[1])
    raise EmoplugError(f"job {job.id}: no training utterance has audio features")


def _write_text(ctx: RunContext, job: Job, model: Any, folder: Path) -> int:
    """Write the cell's text encoder (see the module docstring); return its output size."""
    text_config = job.cell.config["text"]
    component = ctx.registry.build("text", text_config)
    mode = text_mode(job)
    if mode == "finetune":
        text_stage.save_text_encoder(component, model.text, folder)
        return int(model.text.dim)
    if mode == "staged":
        sid = text_stage.job_stage_id(ctx, job)
        source = text_stage.stage_path(ctx, sid) / text_stage.STAGE_ENCODER
        if not source.is_dir():
            raise EmoplugError(f"job {job.id}: stage {sid} kept no encoder (it ran without "
                               f"train.save: best); delete stages/{sid} and run again")
        link_or_copy_tree(source, folder)
        outputs = text_stage.load_stage(ctx, sid)
        return int(next(iter(outputs.values()))[1].shape[0])
    module = text_stage.build_text_module(ctx, text_config, seed=0)
    text_stage.save_text_encoder(component, module, folder)
    return int(module.dim)


def _out_dim(fusion: Any, dims: dict[str, int]) -> int:
    """The fusion's output size, from one forward pass over a dummy one-step input."""
    import torch

    from emoplug.types import Encoded

    like = next(fusion.parameters())
    inputs = {m: Encoded(like.new_zeros(1, 1, d), torch.ones(1, 1, dtype=torch.bool,
                                                            device=like.device),
                         like.new_zeros(1, d)) for m, d in dims.items()}
    training = fusion.training
    fusion.eval()
    with torch.no_grad():
        out = fusion(inputs)
    fusion.train(training)
    return int(out.shape[-1])


def save_model(folder: Path, ctx: RunContext, job: Job, model: Any, approach: Any) -> None:
    """Write the trained ``model`` (a CellModel) and fitted ``approach`` of ``job`` to
    ``folder`` atomically (built in a temporary sibling folder, then renamed)."""
    from safetensors.torch import save_file

    cfg = job.cell.config
    mode = audio_mode(cfg["audio"])
    speech_keys = pretrained_keys(model, "audio") if mode == "finetune" else set()
    with atomic_folder(folder) as tmp:
        dims: dict[str, int] = {}
        if cfg["text"] is not None:
            dims["text"] = _write_text(ctx, job, model, tmp / TEXT_DIR)
        if model.audio is not None:
            dims["audio"] = int(model.audio.dim)
        if mode == "finetune":
            (tmp / AUDIO_DIR).mkdir()
            ctx.registry.build("audio", cfg["audio"]).save_waveform_encoder(model.audio,
                                                                            tmp / AUDIO_DIR)
        elif mode == "staged":
            _link_speech_stage(ctx, job, tmp / AUDIO_DIR)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "model",
            "emoplug_version": emoplug.__version__,
            "job": job.id,
            "cell": job.cell.id,
            "cell_label": job.cell.label,
            "fold": job.fold,
            "seed": job.seed,
            "labels": list(ctx.labels),
            "avd_names": list(AVD_NAMES),
            "avd_scale": list(ctx.corpus.avd_scale),
            "predicts_avd": bool(approach.predicts_avd),
            "text_mode": text_mode(job),
            "components": {axis: cfg[axis] for axis in ("text", "audio", "fusion", "approach")},
            "dims": dims,
            "audio_mode": mode,
            "audio_input_dim": (1 if mode == "finetune" else _audio_input_dim(ctx, job)
                                if cfg["audio"] is not None else None),
            "out_dim": _out_dim(model.fusion, dims),
            "batch_size": ctx.plan.train_settings(job.cell).batch_size,
            "approach_state": approach.state_dict(),
            "config": job.resolved_config(),
            "versions": versions(),
        }
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                   if not k.startswith(TEXT_MODULE_PREFIX) and k not in speech_keys}
        save_file(weights, str(tmp / WEIGHTS), metadata={"format_version": FORMAT_VERSION})
        write_json_atomic(tmp / MODEL_JSON, manifest)
