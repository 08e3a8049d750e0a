"""The openSMILE feature sets as featurizers: utterance functionals ``[1, F]`` or low-level
descriptors per frame ``[frames, L]`` (10 ms hop), exactly as ``opensmile.Smile`` computes
them."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field

from emoplug import (
    AudioEncoderConfig,
    AudioFeaturizer,
    CacheLayout,
    ComponentConfig,
    EmoplugError,
    build_audio_encoder,
    missing_package,
)

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


INSTALL = 'pip install "emoplug[opensmile]"'


class OpenSmileConfig(ComponentConfig):
    """Settings of an openSMILE featurizer."""

    level: Literal["functionals", "lld"] = Field(
        "functionals", description="functionals: one row of utterance statistics; lld: "
        "low-level descriptors per 10 ms frame")
    sample_rate: int = Field(16000, gt=0, description="audio is resampled to this rate")
    encoder: AudioEncoderConfig | None = Field(
        None, description="default: mlp for functionals, cnn for lld")


def opensmile_version() -> str:
    """The installed opensmile package's version (read without importing it)."""
    from importlib.metadata import version

    return version("opensmile")


class OpenSmileFeaturizer(AudioFeaturizer):
    """Base of the openSMILE featurizers; ``feature_set`` names an ``opensmile.FeatureSet``."""

    Config: ClassVar[type[OpenSmileConfig]] = OpenSmileConfig
    feature_set: ClassVar[str]
    #: columns of the functionals and of the low-level descriptors
    functionals: ClassVar[int]
    descriptors: ClassVar[int]

    def __init__(self, config: BaseModel | None = None):
        super().__init__(config)
        self._smile: Any = None

    @classmethod
    def unavailable_reason(cls, config: BaseModel | None = None) -> str | None:
        return missing_package("opensmile", INSTALL)

    @property
    def sample_rate(self) -> int:  # type: ignore[override]
        return self.config.sample_rate

    def cache_key(self) -> str:
        """Name, feature set, level, sample rate, this code's and openSMILE's versions."""
        settings = self.config.model_dump(mode="json", exclude={"encoder"})
        payload = json.dumps([self.name, self.feature_set, settings, self.version,
                              opensmile_version()], sort_keys=True)
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"

    def smile(self) -> Any:
        """The ``opensmile.Smile`` extractor of this feature set and level (built once)."""
        if self._smile is None:
            try:
                import opensmile
            except ImportError as exc:
                raise EmoplugError(f"audio featurizer '{self.name}' needs opensmile: "
                                   f"{INSTALL}") from exc
            level = (opensmile.FeatureLevel.Functionals if self.config.level == "functionals"
                     else opensmile.FeatureLevel.LowLevelDescriptors)
            self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet[self.feature_set],
                                          feature_level=level)
        return self._smile

    def cache_layout(self) -> CacheLayout:
        """Functionals: one row; LLDs: 100 frames a second (openSMILE's 10 ms hop)."""
        if self.config.level == "functionals":
            return CacheLayout(0.0, 1.0, self.functionals, "float32")
        return CacheLayout(100.0, 0.0, self.descriptors, "float32")

    def featurize(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        import numpy as np

        features = self.smile().process_signal(waveform, sample_rate).to_numpy(np.float32)
        if features.shape[0] == 0:
            raise EmoplugError(f"{self.name}: audio of {len(waveform) / sample_rate:.3f} s "
                               "is too short for one openSMILE frame")
        return np.ascontiguousarray(features)

    def encoder_config(self) -> AudioEncoderConfig:
        if self.config.encoder is not None:
            return self.config.encoder
        return AudioEncoderConfig(type="mlp" if self.config.level == "functionals" else "cnn")

    def build_encoder(self, input_dim: int) -> nn.Module:
        return build_audio_encoder(self.encoder_config(), input_dim)


class Egemaps(OpenSmileFeaturizer):
    """eGeMAPSv02: 88 functionals ``[1, 88]`` or 25 LLDs ``[frames, 25]``."""

    name: ClassVar[str] = "egemaps"
    version: ClassVar[str] = "1"
    feature_set: ClassVar[str] = "eGeMAPSv02"
    functionals: ClassVar[int] = 88
    descriptors: ClassVar[int] = 25


class Compare(OpenSmileFeaturizer):
    """ComParE 2016: 6373 functionals ``[1, 6373]`` or 65 LLDs ``[frames, 65]``."""

    name: ClassVar[str] = "compare"
    version: ClassVar[str] = "1"
    feature_set: ClassVar[str] = "ComParE_2016"
    functionals: ClassVar[int] = 6373
    descriptors: ClassVar[int] = 65
