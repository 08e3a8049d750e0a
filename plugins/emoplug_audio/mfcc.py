"""MFCC featurizer: mel-frequency cepstral coefficients (+ deltas), per-utterance CMVN, or
their utterance-level mean and std (``level: functionals``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from emoplug import CacheLayout
from emoplug_audio.base import Featurizer, LevelConfig, at_level, level_layout

if TYPE_CHECKING:
    import numpy as np


class MFCC(Featurizer):
    """``frames``: ``[frames, n_mfcc * (deltas + 1)]``, a CNN over time by default;
    ``functionals``: ``[1, 2 * n_mfcc * (deltas + 1)]``, an MLP by default; float32."""

    name: ClassVar[str] = "mfcc"
    version: ClassVar[str] = "1"

    class Config(LevelConfig):
        n_mfcc: int = Field(40, gt=0, description="cepstral coefficients per frame")
        n_mels: int = Field(64, gt=0, description="mel bands the coefficients are taken from")
        deltas: Literal[0, 1, 2] = Field(0, description="append deltas (1) and delta-deltas (2)")
        win_ms: float = Field(25.0, gt=0, description="analysis window length (ms)")
        hop_ms: float = Field(10.0, gt=0, description="frame shift (ms)")

        @model_validator(mode="after")
        def _mfcc_fits_mels(self):
            if self.n_mfcc > self.n_mels:
                raise ValueError(f"n_mfcc ({self.n_mfcc}) must not exceed n_mels "
                                 f"({self.n_mels})")
            return self

    def cache_layout(self) -> CacheLayout:
        cfg = self.config
        return level_layout(cfg.n_mfcc * (cfg.deltas + 1), cfg.hop_ms,
                            cfg.level == "functionals")

    def featurize(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        import librosa

        from emoplug_audio.dsp import add_deltas, frame_sizes

        cfg = self.config
        win, hop, n_fft = frame_sizes(sample_rate, cfg.win_ms, cfg.hop_ms)
        coefficients = librosa.feature.mfcc(
            y=waveform, sr=sample_rate, n_mfcc=cfg.n_mfcc, n_fft=n_fft, hop_length=hop,
            win_length=win, n_mels=cfg.n_mels).T
        return at_level(add_deltas(coefficients, cfg.deltas), cfg)
