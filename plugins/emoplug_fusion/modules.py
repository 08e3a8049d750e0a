"""The ``nn.Module`` each fusion strategy builds: ``forward({modality: Encoded}) -> [B, out]``."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from emoplug import Encoded
from emoplug_fusion.layers import (
    MLPHead,
    PooledProjection,
    masked_mean,
    select_inputs,
    zero_padding,
)


class EarlyFusionModule(nn.Module):
    """Pooled vectors (optionally projected) concatenated, then one joint MLP head."""

    def __init__(self, input_dims: dict[str, int], out_dim: int, hidden: int, dropout: float,
                 project: int | None):
        super().__init__()
        self.joint = PooledProjection(input_dims, project)
        self.head = MLPHead(self.joint.out_dim, out_dim, hidden, dropout)

    def forward(self, inputs: Mapping[str, Encoded]) -> torch.Tensor:
        return self.head(self.joint(inputs))


class LateFusionModule(nn.Module):
    """One MLP head per modality; outputs combined by learned softmax weights or the mean.

    After each forward, ``last_modality_outputs`` maps modality to that head's ``[B, out]``."""

    def __init__(self, input_dims: dict[str, int], out_dim: int, hidden: int, dropout: float,
                 combine: str):
        super().__init__()
        self.modalities = list(input_dims)
        self.heads = nn.ModuleDict(
            {m: MLPHead(d, out_dim, hidden, dropout) for m, d in input_dims.items()})
        self.combine = combine
        self.logit_weights = (nn.Parameter(torch.zeros(len(input_dims)))
                              if combine == "learned" else None)
        self.last_modality_outputs: dict[str, torch.Tensor] = {}

    def forward(self, inputs: Mapping[str, Encoded]) -> torch.Tensor:
        encoded = select_inputs(inputs, self.modalities)
        outputs = {m: self.heads[m](enc.pooled)
                   for m, enc in zip(self.modalities, encoded, strict=True)}
        self.last_modality_outputs = outputs
        stacked = torch.stack([outputs[m] for m in self.modalities])  # [M, B, out]
        if self.logit_weights is None:
            return stacked.mean(dim=0)
        weights = torch.softmax(self.logit_weights, dim=0)
        return torch.einsum("m,mbo->bo", weights, stacked)


class HybridFusionModule(nn.Module):
    """An early-fusion joint head plus a head per modality, combined with learned weights.

    After each forward, ``last_modality_outputs`` maps ``joint`` and each modality to its
    head's ``[B, out]``."""

    def __init__(self, input_dims: dict[str, int], out_dim: int, hidden: int, dropout: float,
                 project: int | None):
        super().__init__()
        self.early = EarlyFusionModule(input_dims, out_dim, hidden, dropout, project)
        self.late = LateFusionModule(input_dims, out_dim, hidden, dropout, "mean")
        self.logit_weights = nn.Parameter(torch.zeros(len(input_dims) + 1))
        self.last_modality_outputs: dict[str, torch.Tensor] = {}

    def forward(self, inputs: Mapping[str, Encoded]) -> torch.Tensor:
        joint = self.early(inputs)
        self.late(inputs)
        outputs = {"joint": joint, **self.late.last_modality_outputs}
        self.last_modality_outputs = outputs
        weights = torch.softmax(self.logit_weights, dim=0)
        return torch.einsum("m,mbo->bo", weights, torch.stack(list(outputs.values())))


#: PyTorch's CPU softmax over fewer than 16 positions takes a path ~13x slower than over 16
#: (torch 2.13; benchmarks/README.md), so a shorter context is padded to this many keys on
#: the CPU. The padded keys are masked and get no weight; only the attention dropout's
#: random draws (training) also cover them.
MIN_CPU_KEYS = 16


def pad_short_context(context: torch.Tensor, mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``context [B, S, D]`` and ``mask [B, S]`` padded (mask False) to ``MIN_CPU_KEYS``
    positions on the CPU, and to one position elsewhere (an empty context); otherwise
    unchanged."""
    fewest = MIN_CPU_KEYS if context.device.type == "cpu" else 1
    missing = fewest - context.shape[1]
    if missing <= 0:
        return context, mask
    return (nn.functional.pad(context, (0, 0, 0, missing)),
            nn.functional.pad(mask, (0, missing), value=False))


class AttentionBlock(nn.Module):
    """``norm(query + dropout(attention(query, context)))``; without attention, ``norm(query)``.

    ``norm`` is a LayerNorm, or the identity when ``layer_norm`` is off."""

    def __init__(self, dim: int, heads: int, dropout: float, attention: bool, layer_norm: bool):
        super().__init__()
        self.attention = (nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
                          if attention else None)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim) if layer_norm else nn.Identity()

    def forward(self, query: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor) -> torch.Tensor:
        if self.attention is None:
            return self.norm(query)
        context, context_mask = pad_short_context(context, context_mask)
        padding = ~context_mask
        # A row with no real position would attend to nothing (NaN); let it see position 0.
        padding[:, 0] &= ~padding.all(dim=1)
        attended, _ = self.attention(query, context, context, key_padding_mask=padding,
                                     need_weights=False)
        return self.norm(query + self.dropout(attended))


class AttentionFusionModule(nn.Module):
    """Project each sequence to ``dim``; text attends to audio and audio to text (one modality:
    self-attention); masked mean pooling of each stream; concatenation; MLP head."""

    def __init__(self, input_dims: dict[str, int], out_dim: int, *, hidden: int,
                 dropout: float, dim: int, heads: int, attention: bool, layer_norm: bool):
        super().__init__()
        self.modalities = list(input_dims)
        self.project = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in input_dims.items()})
        self.blocks = nn.ModuleDict(
            {m: AttentionBlock(dim, heads, dropout, attention, layer_norm) for m in input_dims})
        self.head = MLPHead(dim * len(input_dims), out_dim, hidden, dropout)

    def forward(self, inputs: Mapping[str, Encoded]) -> torch.Tensor:
        encoded = select_inputs(inputs, self.modalities)
        masks = [enc.mask.bool() for enc in encoded]
        streams = [self.project[m](zero_padding(enc.sequence, mask))
                   for m, enc, mask in zip(self.modalities, encoded, masks, strict=True)]
        pooled = []
        for i, m in enumerate(self.modalities):
            other = (i + 1) % len(streams)  # the other modality; itself when alone
            fused = self.blocks[m](streams[i], streams[other], masks[other])
            pooled.append(masked_mean(fused, masks[i]))
        return self.head(torch.cat(pooled, dim=-1))


class SingleModalityModule(nn.Module):
    """One modality's pooled vector through an MLP head."""

    def __init__(self, input_dims: dict[str, int], out_dim: int, hidden: int, dropout: float):
        super().__init__()
        (self.modality, in_dim), = input_dims.items()
        self.head = MLPHead(in_dim, out_dim, hidden, dropout)

    def forward(self, inputs: Mapping[str, Encoded]) -> torch.Tensor:
        (encoded,) = select_inputs(inputs, [self.modality])
        return self.head(encoded.pooled)
