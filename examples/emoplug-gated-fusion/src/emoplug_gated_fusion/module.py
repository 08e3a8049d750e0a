"""The gated multimodal unit as an ``nn.Module``: ``forward({modality: Encoded}) -> [B, out]``.

Arevalo, Solorio, Montes-y-Gómez and González (2017), "Gated Multimodal Units for Information
Fusion". Each modality's pooled vector x_m is projected to h_m = tanh(W_m x_m); a gate
z = sigmoid(W_z [x_1; x_2]) computed from the concatenated inputs weighs them,
h = z * h_1 + (1 - z) * h_2 (that is, h = sum_m z_m * h_m with z_1 = z, z_2 = 1 - z); an MLP
head maps h to the outputs. With one modality there is nothing to gate and h = h_1.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from emoplug import EmoplugError, Encoded


class GatedMultimodalUnit(nn.Module):
    """GMU over the modalities of ``input_dims`` (taken in sorted order: audio, then text).

    After each forward, ``last_gate`` holds the gate ``z [B, dim]`` (the weight of the first
    modality; None with one modality), for inspecting how much each modality was used.
    """

    def __init__(self, input_dims: dict[str, int], out_dim: int, *, dim: int, hidden: int,
                 dropout: float):
        super().__init__()
        if len(input_dims) > 2:
            raise EmoplugError(f"fusion 'gated' fuses one or two modalities, got "
                               f"{sorted(input_dims)}")
        self.modalities = sorted(input_dims)
        self.project = nn.ModuleDict({m: nn.Linear(input_dims[m], dim) for m in self.modalities})
        self.gate = (nn.Linear(sum(input_dims.values()), dim) if len(input_dims) == 2 else None)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )
        self.last_gate: torch.Tensor | None = None

    def forward(self, inputs: Mapping[str, Encoded]) -> torch.Tensor:
        if set(inputs) != set(self.modalities):
            raise EmoplugError(f"fusion 'gated' built for {self.modalities} was given "
                               f"{sorted(inputs)}")
        pooled = [inputs[m].pooled for m in self.modalities]
        projected = [torch.tanh(self.project[m](x))
                     for m, x in zip(self.modalities, pooled, strict=True)]
        if self.gate is None:
            fused = projected[0]
        else:
            z = torch.sigmoid(self.gate(torch.cat(pooled, dim=-1)))
            fused = z * projected[0] + (1 - z) * projected[1]
            self.last_gate = z.detach()
        return self.head(fused)
