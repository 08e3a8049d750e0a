"""The network of one cell: modality encoders, then the fusion (which ends in the head)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from emoplug.types import Encoded


class CellModel(nn.Module):
    """``text`` encoder (trainable, or absent when its outputs are cached), ``audio`` encoder,
    and the fusion module producing ``[B, out_dim]``."""

    def __init__(self, fusion: nn.Module, text: nn.Module | None = None,
                 audio: nn.Module | None = None):
        super().__init__()
        self.text = text
        self.audio = audio
        self.fusion = fusion

    def encode(self, batch: dict[str, Any]) -> dict[str, Encoded]:
        encoded: dict[str, Encoded] = {}
        if "text_cached" in batch:
            sequence, mask, pooled = batch["text_cached"]
            encoded["text"] = Encoded(sequence, mask, pooled)
        elif "text_tokens" in batch:
            encoded["text"] = self.text(**batch["text_tokens"])
        if "audio" in batch:
            features, mask = batch["audio"]
            encoded["audio"] = self.audio(features, mask)
        return encoded

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.fusion(self.encode(batch))


def describe_model(model: CellModel, dims: dict[str, int], out_dim: int,
                   audio_input_dim: int | None) -> dict[str, Any]:
    """What a job built, for ``result.json``'s ``model``: each part's class and trainable
    parameter count (for a pretrained encoder trained in the job, also how many of them are
    its pretrained weights: ``pretrained_parameters``), the fused ``dims``, ``out_dim`` and
    the audio features' width; enough to rebuild the audio encoder and fusion from
    ``config.json`` and compare
    (:func:`emoplug.train.model_check.check_job`)."""
    def part(module: nn.Module | None) -> dict[str, Any] | None:
        if module is None:
            return None
        record = {"class": type(module).__name__,
                  "parameters": sum(p.numel() for p in module.parameters() if p.requires_grad)}
        if hasattr(module, "pretrained_parameters"):  # a pretrained encoder trained here
            record["pretrained_parameters"] = sum(
                p.numel() for p in module.pretrained_parameters() if p.requires_grad)
        return record

    return {"text": part(model.text), "audio": part(model.audio), "fusion": part(model.fusion),
            "dims": dict(dims), "out_dim": int(out_dim), "audio_input_dim": audio_input_dim}


def pretrained_keys(model: nn.Module, modality: str) -> set[str]:
    """The ``state_dict`` keys of the ``modality`` encoder's pretrained weights (its
    module's ``pretrained_parameters()``); empty when it has none."""
    module = getattr(model, modality, None)
    if module is None or not hasattr(module, "pretrained_parameters"):
        return set()
    ids = {id(p) for p in module.pretrained_parameters()}
    return {f"{modality}.{name}" for name, p in module.named_parameters() if id(p) in ids}


def parameter_groups(model: nn.Module, lr: float, encoder_lr: dict[str, float],
                     weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: each modality's pretrained encoder weights (its module's
    ``pretrained_parameters()``) at ``encoder_lr[modality]``, the rest at ``lr``; no weight
    decay on biases and norms (1-D parameters)."""
    rate: dict[int, float] = {}
    for modality in ("text", "audio"):
        module = getattr(model, modality, None)
        if module is not None and hasattr(module, "pretrained_parameters"):
            rate.update({id(p): encoder_lr[modality] for p in module.pretrained_parameters()})
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            key = (rate.get(id(param), lr), param.ndim >= 2)
            groups.setdefault(key, []).append(param)
    return [{"params": params, "lr": group_lr,
             "weight_decay": weight_decay if decays else 0.0}
            for (group_lr, decays), params in groups.items()]
