"""The ``gated`` fusion component: its config and ``build``. Light to import (no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from emoplug import ComponentConfig, EmoplugError, Fusion

if TYPE_CHECKING:
    from torch import nn

MODALITIES = ("text", "audio")


class GatedConfig(ComponentConfig):
    """Settings of the ``gated`` fusion (unknown keys are errors, as for every component)."""

    dim: int = Field(128, gt=0, description="size of each modality's tanh projection h_m")
    hidden: int = Field(128, gt=0, description="width of the MLP head's hidden layer")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout before each head layer")


class GatedFusion(Fusion):
    """Gated multimodal unit (Arevalo et al., 2017) on the pooled vectors, then an MLP head."""

    name: ClassVar[str] = "gated"
    Config: ClassVar[type[GatedConfig]] = GatedConfig
    config: GatedConfig

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        from emoplug_gated_fusion.module import GatedMultimodalUnit

        if not input_dims:
            raise EmoplugError("fusion 'gated': no modality to fuse (enable text or audio)")
        unknown = sorted(set(input_dims) - set(MODALITIES))
        if unknown:
            raise EmoplugError(f"fusion 'gated': unknown modality {unknown[0]!r} "
                               "(expected 'text' and/or 'audio')")
        c = self.config
        return GatedMultimodalUnit(input_dims, out_dim, dim=c.dim, hidden=c.hidden,
                                   dropout=c.dropout)
