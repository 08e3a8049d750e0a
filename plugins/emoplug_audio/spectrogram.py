"""Spectrogram featurizer: log-mel or linear log-magnitude STFT frames, in dB."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from emoplug_audio.encoders import EncoderConfig, Featurizer, FeaturizerConfig

if TYPE_CHECKING:
    import numpy as np


class Spectrogram(Featurizer):
    """``[frames, n_mels]`` (logmel) or ``[frames, n_fft // 2 + 1]`` (linear) float32."""

    name: ClassVar[str] = "spectrogram"
    version: ClassVar[str] = "1"

    class Config(FeaturizerConfig):
        kind: Literal["logmel", "linear"] = Field(
            "logmel", description="logmel: mel power in dB; linear: STFT magnitude in dB")
        n_mels: int = Field(64, gt=0, description="mel bands (logmel only)")
        win_ms: float = Field(25.0, gt=0, description="analysis window length (ms)")
        hop_ms: float = Field(10.0, gt=0, description="frame shift (ms)")
        top_db: float = Field(80.0, gt=0, description="floor: this many dB below the "
                              "utterance's loudest bin")
        cmvn: bool = Field(True, description="normalise each bin per utterance")
        encoder: EncoderConfig = EncoderConfig(type="cnn")

    def featurize(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        import librosa
        import numpy as np

        from emoplug_audio.dsp import cmvn, frame_sizes

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
        if cfg.cmvn:
            features = cmvn(features)
        return np.ascontiguousarray(features, dtype=np.float32)
