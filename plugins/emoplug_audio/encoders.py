"""Encoder settings (``encoder:`` in a featurizer's config) and the shared featurizer base.

Light to import: the torch modules live in :mod:`emoplug_audio.nn`, loaded by ``build``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from emoplug import AudioFeaturizer, ComponentConfig

if TYPE_CHECKING:
    from torch import nn


class EncoderConfig(ComponentConfig):
    """The trainable encoder that turns padded features into ``Encoded``."""

    type: Literal["cnn", "mlp", "attention_pool"] = Field(
        "cnn", description="cnn: 1-D convolutions over time; mlp: per-frame MLP; "
        "attention_pool: per-frame projection + attention pooling")
    hidden: int = Field(128, gt=0, description="width of every layer (the encoder's dim)")
    layers: int = Field(2, ge=1, description="conv blocks (cnn) or linear layers (mlp, "
                        "attention_pool)")
    kernel_size: int = Field(5, ge=1, description="cnn: odd kernel size of each conv")
    stride: int = Field(1, ge=1, description="cnn: stride of each conv (downsamples time)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout after each layer")

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {value}")
        return value


def build_encoder(config: EncoderConfig, input_dim: int, n_layers: int = 1) -> nn.Module:
    """The encoder module for ``input_dim`` features; ``n_layers > 1`` means the features
    are ``n_layers`` stacked hidden-state layers mixed by learned softmax weights first."""
    from emoplug_audio.nn import make_encoder

    return make_encoder(config, input_dim, n_layers)


class FeaturizerConfig(ComponentConfig):
    """Settings every bundled featurizer has."""

    sample_rate: int = Field(16000, gt=0, description="audio is resampled to this rate")


class Featurizer(AudioFeaturizer):
    """Base of the bundled featurizers: ``encoder`` settings do not change the cache key."""

    Config: ClassVar[type[FeaturizerConfig]] = FeaturizerConfig

    @property
    def sample_rate(self) -> int:  # type: ignore[override]
        return self.config.sample_rate

    def cache_key(self) -> str:
        settings = self.config.model_dump(mode="json", exclude={"encoder"})
        payload = json.dumps([self.name, settings, self.version], sort_keys=True)
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"

    def encoder_config(self) -> EncoderConfig:
        return self.config.encoder

    def build_encoder(self, input_dim: int) -> nn.Module:
        return build_encoder(self.encoder_config(), input_dim)
