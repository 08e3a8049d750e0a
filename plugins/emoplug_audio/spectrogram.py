"""Spectrogram featurizer: log-mel or linear log-magnitude STFT frames, in dB (+ deltas), or
their utterance-level mean and std (``level: functionals``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from emoplug import CacheLayout
from emoplug_audio.base import Featurizer, LevelConfig, at_level, level_layout

if TYPE_CHECKING:
    import numpy as np


class Spectrogram(Featurizer):
    """``frames``: ``[frames, B * (deltas + 1)]`` with ``B`` = ``n_mels`` (logmel) or
    ``n_fft // 2 + 1`` (linear), a CNN by default; ``functionals``: ``[1, 2 * B * (deltas +
    1)]``, an MLP by default; float32."""

    name: ClassVar[str] = "spectrogram"
    version: ClassVar[str] = "1"

    class Config(LevelConfig):
        kind: Literal["logmel", "linear"] = Field(
            "logmel", description="logmel: mel power in dB; linear: STFT magnitude in dB")
        n_mels: int = Field(64, gt=0, description="mel bands (logmel only)")
        win_ms: float = Field(25.0, gt=0, description="analysis window length (ms)")
        hop_ms: float = Field(10.0, gt=0, description="frame shift (ms)")
        top_db: float = Field(80.0, gt=0, description="floor: this many dB below the "
                              "utterance's loudest bin")
        deltas: Literal[0, 1, 2] = Field(0, description="append deltas (1) and delta-deltas (2)")

    def cache_layout(self) -> CacheLayout:
        from emoplug_audio.dsp import frame_sizes

        cfg = self.config
        bins = (cfg.n_mels if cfg.kind == "logmel"
                else frame_sizes(cfg.sample_rate, cfg.win_ms, cfg.hop_ms)[2] // 2 + 1)
        return level_layout(bins * (cfg.deltas + 1), cfg.hop_ms, cfg.level == "functionals")

    def featurize(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        import librosa
        import numpy as np

        from emoplug_audio.dsp import add_deltas, frame_sizes

        cfg = self.config
        win, hop, n_fft = frame_sizes(sample_rate, cfg.win_ms, cfg.hop_ms)
        if cfg.kind == "logmel":
            power = librosa.feature.melspectrogram(
                y=waveform, sr=sample_rate, n_fft=n_fft, hop_length=hop, win_length=win,
                n_mels=cfg.n_mels)
            features = librosa.power_to_db(power, top_db=cfg.top_db).T
        else:
            magnitude = np.abs(librosa.stft(waveform, n_fft=n_fft, hop_length=hop,
                                            win_length=win))
            features = librosa.amplitude_to_db(magnitude, top_db=cfg.top_db).T
        return at_level(add_deltas(features, cfg.deltas), cfg)
