"""The trainable audio encoders every featurizer may hand out: their settings
(``AudioEncoderConfig``, the ``encoder:`` block of a featurizer) and ``build_audio_encoder``.

Part of the plugin contract, so that a featurizer plugin reuses them instead of copying
them. Light to import: the torch modules live in :mod:`emoplug.audio_nn`, loaded by build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from emoplug.components import ComponentConfig

if TYPE_CHECKING:
    from torch import nn


class AudioEncoderConfig(ComponentConfig):
    """The trainable encoder that turns padded features into ``Encoded``."""

    type: Literal["cnn", "mlp", "attention_pool", "linear"] = Field(
        "cnn", description="cnn: 1-D convolutions over time; mlp: per-frame MLP; "
        "attention_pool: per-frame projection + attention pooling; linear: the standardised "
        "features themselves, no trainable layer (with a linear head, fusion hidden: 0, the "
        "cell is a linear classifier on utterance statistics)")
    hidden: int = Field(128, gt=0, description="width of every layer (the encoder's dim)")
    layers: int = Field(2, ge=1, description="conv blocks (cnn) or linear layers (mlp, "
                        "attention_pool); linear has one")
    kernel_size: int = Field(5, ge=1, description="cnn: odd kernel size of each conv")
    stride: int = Field(1, ge=1, description="cnn: stride of each conv (downsamples time)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout after each layer")
    standardize: bool | None = Field(
        None, description="standardise each input feature with the training fold's mean and "
        "std (a constant feature is scaled by 1, as scikit-learn's StandardScaler); default "
        "on for linear and mlp (utterance statistics span many orders of magnitude), off for "
        "cnn and attention_pool (frames are normalised per utterance)")

    @model_validator(mode="before")
    @classmethod
    def _default_standardize(cls, data: Any) -> Any:
        """An unset ``standardize`` becomes the type's default, so configs record it."""
        if isinstance(data, dict) and data.get("standardize") is None:
            kind = data.get("type", cls.model_fields["type"].default)
            return {**data, "standardize": kind in ("linear", "mlp")}
        return data

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {value}")
        return value


def build_audio_encoder(config: AudioEncoderConfig, input_dim: int,
                        n_layers: int = 1) -> nn.Module:
    """The encoder module for ``input_dim`` features; ``n_layers > 1`` means the features
    are ``n_layers`` stacked hidden-state layers mixed by learned softmax weights first."""
    from emoplug.audio_nn import make_encoder

    return make_encoder(config, input_dim, n_layers)
