"""The shared base of the bundled featurizers; the encoders they hand out come from
:mod:`emoplug.audio_encoders` (``AudioEncoderConfig``, ``build_audio_encoder``).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from emoplug import (
    AudioEncoderConfig,
    AudioFeaturizer,
    CacheLayout,
    ComponentConfig,
    build_audio_encoder,
)

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


class FeaturizerConfig(ComponentConfig):
    """Settings every bundled featurizer has."""

    sample_rate: int = Field(16000, gt=0, description="audio is resampled to this rate")


class LevelConfig(FeaturizerConfig):
    """Settings of a frame featurizer that can also give utterance-level functionals: the
    mean and standard deviation of each column over the utterance, ``[1, 2 * D]``, taken
    before ``cmvn`` (which applies to frames only). Functionals default to an ``mlp``
    encoder, frames to a ``cnn``."""

    level: Literal["frames", "functionals"] = Field(
        "frames", description="frames, or utterance-level mean and std of each column")
    cmvn: bool = Field(True, description="frames: normalise each column per utterance")
    encoder: AudioEncoderConfig = AudioEncoderConfig(type="cnn")

    @model_validator(mode="before")
    @classmethod
    def _functionals_encoder(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("level") == "functionals" \
                and "encoder" not in data:
            return {**data, "encoder": {"type": "mlp"}}
        return data


class Featurizer(AudioFeaturizer):
    """Base of the bundled featurizers: ``encoder`` settings, and the ``training_settings``
    (how a speech model trains: features of the frozen model do not depend on them), do not
    change the cache key."""

    Config: ClassVar[type[FeaturizerConfig]] = FeaturizerConfig
    training_settings: ClassVar[frozenset[str]] = frozenset()

    @property
    def sample_rate(self) -> int:  # type: ignore[override]
        return self.config.sample_rate

    def cache_key(self) -> str:
        settings = self.config.model_dump(mode="json",
                                          exclude={"encoder", *self.training_settings})
        payload = json.dumps([self.name, settings, self.version], sort_keys=True)
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"

    def encoder_config(self) -> AudioEncoderConfig:
        return self.config.encoder

    def build_encoder(self, input_dim: int) -> nn.Module:
        return build_audio_encoder(self.encoder_config(), input_dim)


def at_level(features: np.ndarray, config: LevelConfig) -> np.ndarray:
    """Frame features ``[frames, D]`` as ``config`` asks: CMVN'd frames, or their
    functionals ``[1, 2 * D]``; float32, contiguous."""
    import numpy as np

    from emoplug_audio.dsp import cmvn, mean_std

    if config.level == "functionals":
        features = mean_std(features)
    elif config.cmvn:
        features = cmvn(features)
    return np.ascontiguousarray(features, dtype=np.float32)


def level_layout(columns: int, hop_ms: float, functionals: bool) -> CacheLayout:
    """The float32 cache layout of ``columns`` centred frames every ``hop_ms`` (one more
    row per file), or of one row of their mean and std when ``functionals``."""
    if functionals:
        return CacheLayout(0.0, 1.0, 2 * columns, "float32")
    return CacheLayout(1000.0 / hop_ms, 1.0, columns, "float32")
