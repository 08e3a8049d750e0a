"""Layers every fusion strategy shares: the MLP head, masked mean pooling, input checks."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from emoplug import EmoplugError, Encoded


class MLPHead(nn.Module):
    """``dropout -> linear -> GELU -> dropout -> linear``: ``[B, in_dim]`` to ``[B, out_dim]``;
    with ``hidden`` 0, ``dropout -> linear`` (a linear classifier on its input)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, dropout: float):
        super().__init__()
        if hidden == 0:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
            return
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def zero_padding(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sequence [B, T, H]`` with the padding positions (``mask [B, T]`` False) set to 0,
    so that whatever they held (even NaN) cannot leak into sums."""
    return sequence.masked_fill(~mask.bool().unsqueeze(-1), 0.0)


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``sequence [B, T, H]`` over the positions where ``mask [B, T]`` is True.

    A row without any real position pools to zeros."""
    count = mask.bool().sum(dim=1, keepdim=True).clamp(min=1).to(sequence.dtype)
    return zero_padding(sequence, mask).sum(dim=1) / count


def select_inputs(inputs: Mapping[str, Encoded], modalities: list[str]) -> list[Encoded]:
    """The encodings of ``modalities`` in build order; a different set of keys is an error."""
    if set(inputs) != set(modalities):
        raise EmoplugError(f"fusion built for modalities {sorted(modalities)} was given "
                           f"{sorted(inputs)}")
    return [inputs[m] for m in modalities]


class PooledProjection(nn.Module):
    """Concatenate the modalities' pooled vectors, each first projected to ``project`` if set."""

    def __init__(self, input_dims: dict[str, int], project: int | None):
        super().__init__()
        self.modalities = list(input_dims)
        self.project = nn.ModuleDict(
            {m: nn.Linear(d, project) for m, d in input_dims.items()} if project else {})
        self.out_dim = project * len(input_dims) if project else sum(input_dims.values())

    def forward(self, inputs: Mapping[str, Encoded]) -> torch.Tensor:
        pooled = []
        for m, enc in zip(self.modalities, select_inputs(inputs, self.modalities), strict=True):
            pooled.append(self.project[m](enc.pooled) if self.project else enc.pooled)
        return torch.cat(pooled, dim=-1)
