"""The fusion components: configs and ``build``. Light to import (torch loads in ``build``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from emoplug import ComponentConfig, EmoplugError, Fusion, SettingError

if TYPE_CHECKING:
    from torch import nn


class HeadConfig(ComponentConfig):
    """Settings of the MLP head every strategy ends with."""

    hidden: int = Field(256, ge=0, description="width of the head's hidden layer; 0: no "
                        "hidden layer (a linear head)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout before each linear layer")


def _check_inputs(fusion: str, input_dims: dict[str, int]) -> None:
    if not input_dims:
        raise EmoplugError(f"fusion '{fusion}': no modality to fuse (enable text or audio)")
    unknown = sorted(set(input_dims) - {"text", "audio"})
    if unknown:
        raise EmoplugError(f"fusion '{fusion}': unknown modality {unknown[0]!r} "
                           "(expected 'text' and/or 'audio')")


class EarlyFusion(Fusion):
    """Concatenate the modalities' pooled vectors (optionally projected), then a joint MLP."""

    name: ClassVar[str] = "early"

    class Config(HeadConfig):
        project: int | None = Field(
            None, gt=0, description="project each pooled vector to this size before concat")

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        from emoplug_fusion.modules import EarlyFusionModule

        _check_inputs(self.name, input_dims)
        c = self.config
        return EarlyFusionModule(input_dims, out_dim, c.hidden, c.dropout, c.project)


class LateFusion(Fusion):
    """A head per modality; their outputs are combined by learned weights or averaged."""

    name: ClassVar[str] = "late"

    class Config(HeadConfig):
        combine: Literal["learned", "mean"] = Field(
            "learned", description="learned softmax weights, or the mean of the heads' outputs")

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        from emoplug_fusion.modules import LateFusionModule

        _check_inputs(self.name, input_dims)
        c = self.config
        return LateFusionModule(input_dims, out_dim, c.hidden, c.dropout, c.combine)


class HybridFusion(Fusion):
    """Early and late together: a joint head and per-modality heads, learned weights."""

    name: ClassVar[str] = "hybrid"

    class Config(HeadConfig):
        project: int | None = Field(
            None, gt=0, description="project each pooled vector before the joint head's concat")

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        from emoplug_fusion.modules import HybridFusionModule

        _check_inputs(self.name, input_dims)
        c = self.config
        return HybridFusionModule(input_dims, out_dim, c.hidden, c.dropout, c.project)


class AttentionFusion(Fusion):
    """Cross-modal attention (self-attention with one modality), masked mean pooling, MLP."""

    name: ClassVar[str] = "attention"

    class Config(HeadConfig):
        dim: int = Field(256, gt=0, description="common size both sequences are projected to")
        heads: int = Field(4, gt=0, description="attention heads (must divide dim)")
        attention: bool = Field(True, description="false: ablate the attention blocks",
                                json_schema_extra={"ablation": False})
        layer_norm: bool = Field(True, description="false: ablate the layer normalisation",
                                 json_schema_extra={"ablation": False})

    def check(self) -> list[SettingError]:
        """``heads`` must divide ``dim`` (each head attends over ``dim / heads`` features)."""
        c = self.config
        if c.dim % c.heads:
            return [SettingError("heads", f"dim {c.dim} is not divisible by {c.heads} heads "
                                          "(each head takes dim / heads features)")]
        return []

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        from emoplug_fusion.modules import AttentionFusionModule

        _check_inputs(self.name, input_dims)
        c = self.config
        problems = self.check()
        if problems:
            raise problems[0]
        return AttentionFusionModule(input_dims, out_dim, hidden=c.hidden, dropout=c.dropout,
                                     dim=c.dim, heads=c.heads, attention=c.attention,
                                     layer_norm=c.layer_norm)


class NoFusion(Fusion):
    """One modality only: its pooled vector through an MLP head."""

    name: ClassVar[str] = "none"
    Config: ClassVar[type[HeadConfig]] = HeadConfig

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        from emoplug_fusion.modules import SingleModalityModule

        _check_inputs(self.name, input_dims)
        if len(input_dims) != 1:
            raise EmoplugError(
                f"fusion 'none' takes one modality but got {len(input_dims)} "
                f"({', '.join(input_dims)}); use early/late/hybrid/attention, or set one "
                "modality to null")
        c = self.config
        return SingleModalityModule(input_dims, out_dim, c.hidden, c.dropout)
