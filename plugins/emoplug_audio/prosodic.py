"""Prosodic featurizer: pitch, voicing, energy and zero-crossing rate per frame, or their
utterance-level functionals.

Pitch comes from librosa's ``yin`` (default) or ``pyin`` (about 20x slower), or from Praat's
autocorrelation method through ``praat-parselmouth`` (``pitch: praat``; the optional extra
``emoplug[praat]``). ``yin`` gives no voicing decision, so with ``yin`` a frame's voicing is
its harmonicity: the normalised autocorrelation of the frame at the yin period (1 = perfectly
periodic). A frame is voiced when its harmonicity reaches ``voicing_threshold`` and its energy
lies within ``silence_db`` of the utterance's loudest frame; F0 is 0 in unvoiced frames. With
``pyin`` voicing is pyin's voicing probability and its voiced flag decides; with ``praat``
voicing is Praat's autocorrelation strength and Praat's voicing decision decides (both with
the same energy condition).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from emoplug import AudioEncoderConfig, CacheLayout, missing_package
from emoplug_audio.base import Featurizer, FeaturizerConfig

if TYPE_CHECKING:
    import numpy as np


#: Columns of ``level: frames`` before deltas.
FRAME_COLUMNS = ("f0_hz", "voicing", "energy_db", "zcr")
#: Columns of ``level: functionals``.
FUNCTIONAL_COLUMNS = (
    "f0_mean", "f0_std", "f0_range", "f0_slope",
    "energy_mean", "energy_std", "energy_range", "energy_slope",
    "voiced_ratio", "energy_peak_rate", "duration_s",
)


class Prosodic(Featurizer):
    """``frames``: ``[frames, 4 * (deltas + 1)]``; ``functionals``: ``[1, 11]``; float32."""

    name: ClassVar[str] = "prosodic"
    version: ClassVar[str] = "1"

    class Config(FeaturizerConfig):
        level: Literal["frames", "functionals"] = Field(
            "frames", description="frame-level contours or utterance-level statistics")
        pitch: Literal["yin", "pyin", "praat"] = Field(
            "yin", description="pitch tracker; praat needs the extra emoplug[praat]")
        fmin: float = Field(60.0, gt=0, description="lowest F0 searched (Hz)")
        fmax: float = Field(500.0, gt=0, description="highest F0 searched (Hz)")
        pitch_win_ms: float = Field(64.0, gt=0, description="pitch analysis window (ms); "
                                    "must hold two periods of fmin")
        win_ms: float = Field(25.0, gt=0, description="energy / ZCR window (ms)")
        hop_ms: float = Field(10.0, gt=0, description="frame shift (ms)")
        voicing_threshold: float = Field(0.5, ge=0, le=1, description="yin: harmonicity a "
                                         "voiced frame reaches")
        silence_db: float = Field(40.0, gt=0, description="frames this many dB below the "
                                  "loudest frame are unvoiced")
        deltas: Literal[0, 1, 2] = Field(1, description="frames: append deltas (1) and "
                                         "delta-deltas (2)")
        cmvn: bool = Field(False, description="frames: normalise each column per utterance "
                           "(removes absolute pitch and loudness levels)")
        encoder: AudioEncoderConfig | None = Field(None, description="default: cnn for frames, "
                                              "mlp for functionals")

        @model_validator(mode="after")
        def _check_range(self):
            if self.fmin >= self.fmax:
                raise ValueError(f"fmin ({self.fmin}) must be below fmax ({self.fmax})")
            if self.pitch_win_ms / 1000 < 2 / self.fmin:
                raise ValueError(f"pitch_win_ms ({self.pitch_win_ms}) must hold two periods "
                                 f"of fmin ({2000 / self.fmin:.1f} ms)")
            return self

    @classmethod
    def unavailable_reason(cls, config: BaseModel | None = None) -> str | None:
        if config is not None and config.pitch == "praat":
            return missing_package("parselmouth", 'pip install "emoplug[praat]"')
        return None

    def encoder_config(self) -> AudioEncoderConfig:
        if self.config.encoder is not None:
            return self.config.encoder
        return AudioEncoderConfig(type="cnn" if self.config.level == "frames" else "mlp")

    def cache_layout(self) -> CacheLayout:
        if self.config.level == "functionals":
            return CacheLayout(0.0, 1.0, len(FUNCTIONAL_COLUMNS), "float32")
        return CacheLayout(1000.0 / self.config.hop_ms, 1.0,
                           len(FRAME_COLUMNS) * (self.config.deltas + 1), "float32")

    def featurize(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        import numpy as np

        from emoplug_audio.dsp import add_deltas, cmvn

        contours = self.contours(waveform, sample_rate)
        if self.config.level == "functionals":
            features = functionals(contours, self.config.hop_ms / 1000,
                                   self.config.silence_db)[None, :]
        else:
            features = add_deltas(contours, self.config.deltas)
            if self.config.cmvn:
                features = cmvn(features)
        return np.ascontiguousarray(features, dtype=np.float32)

    def contours(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """``[frames, 4]``: F0 (Hz, 0 unvoiced), voicing, energy (dB), zero-crossing rate."""
        import librosa
        import numpy as np

        from emoplug_audio.dsp import frame_sizes

        cfg = self.config
        win, hop, _ = frame_sizes(sample_rate, cfg.win_ms, cfg.hop_ms)
        pitch_win = frame_sizes(sample_rate, cfg.pitch_win_ms, cfg.hop_ms)[0]
        y = waveform.astype(np.float32, copy=False)
        rms = librosa.feature.rms(y=y, frame_length=win, hop_length=hop)[0]
        energy_db = 20 * np.log10(np.maximum(rms, 1e-5))
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=win, hop_length=hop)[0]
        loud = energy_db >= energy_db.max() - cfg.silence_db
        if cfg.pitch == "pyin":
            f0, voiced, voicing = librosa.pyin(
                y, fmin=cfg.fmin, fmax=cfg.fmax, sr=sample_rate, frame_length=pitch_win,
                hop_length=hop)
            voiced = voiced & loud
        elif cfg.pitch == "praat":
            f0, voicing = praat_pitch(y, sample_rate, hop, len(energy_db), cfg.fmin, cfg.fmax)
            voiced = (f0 > 0) & loud
        else:
            f0 = librosa.yin(y, fmin=cfg.fmin, fmax=cfg.fmax, sr=sample_rate,
                             frame_length=pitch_win, hop_length=hop)
            voicing = harmonicity(y, f0, sample_rate, pitch_win, hop)
            voiced = (voicing >= cfg.voicing_threshold) & loud
        f0 = np.where(voiced, np.nan_to_num(f0), 0.0)
        return np.stack([f0, voicing, energy_db, zcr], axis=1).astype(np.float32)


def praat_pitch(y: np.ndarray, sample_rate: int, hop: int, frames: int, fmin: float,
                fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Praat's autocorrelation pitch (``To Pitch (ac)``, its default settings otherwise):
    F0 (0 where Praat finds the frame unvoiced) and strength, one value per frame centred at
    ``i * hop`` samples (librosa's frames), taken from the nearest Praat frame (0 outside
    Praat's first and last frame)."""
    import numpy as np
    import parselmouth

    sound = parselmouth.Sound(y.astype(np.float64), sampling_frequency=sample_rate)
    pitch = sound.to_pitch_ac(time_step=hop / sample_rate, pitch_floor=fmin,
                              pitch_ceiling=fmax)
    picked = pitch.selected_array
    times = np.arange(frames) * hop / sample_rate
    index = np.rint((times - pitch.x1) / pitch.dx).astype(np.int64)
    inside = (index >= 0) & (index < pitch.n_frames)
    index = np.clip(index, 0, pitch.n_frames - 1)
    f0 = np.where(inside, picked["frequency"][index], 0.0)
    strength = np.where(inside, picked["strength"][index], 0.0)
    return f0, np.clip(strength, 0.0, 1.0)


def harmonicity(y: np.ndarray, f0: np.ndarray, sample_rate: int, frame_length: int,
                hop: int) -> np.ndarray:
    """Normalised autocorrelation of each (centred, zero-padded) frame at lag
    ``sample_rate / f0`` over a window of half the frame (as yin's), clipped to [0, 1];
    0 for silent frames."""
    import librosa
    import numpy as np

    padded = np.pad(y, frame_length // 2)
    frames = librosa.util.frame(padded, frame_length=frame_length, hop_length=hop)
    frames = frames[:, : len(f0)]
    width = frame_length // 2
    lags = np.rint(sample_rate / f0).astype(np.int64)
    lags = np.clip(lags, 1, frame_length - width)
    head = frames[:width]
    shifted = np.take_along_axis(frames, lags[None, :] + np.arange(width)[:, None], axis=0)
    dot = np.einsum("ij,ij->j", head, shifted)
    norm = np.sqrt(np.einsum("ij,ij->j", head, head) * np.einsum("ij,ij->j", shifted, shifted))
    return np.clip(np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 1e-10), 0, 1)


def functionals(contours: np.ndarray, hop_s: float, silence_db: float) -> np.ndarray:
    """Utterance statistics of ``contours`` (see :data:`FUNCTIONAL_COLUMNS`): F0 over voiced
    frames, energy over frames within ``silence_db`` of the loudest, slopes
    per second by least squares, and energy peaks (>= 6 dB prominence) per second as a
    speaking-rate proxy."""
    import numpy as np
    from scipy.signal import find_peaks

    f0, energy = contours[:, 0], contours[:, 2]
    times = np.arange(len(f0)) * hop_s
    duration = len(f0) * hop_s
    voiced = f0 > 0

    def stats(values: np.ndarray, at: np.ndarray) -> list[float]:
        if len(values) == 0:
            return [0.0, 0.0, 0.0, 0.0]
        slope = float(np.polyfit(at, values, 1)[0]) if len(values) > 1 else 0.0
        return [float(values.mean()), float(values.std()), float(np.ptp(values)), slope]

    active = energy >= energy.max() - silence_db
    peaks, _ = find_peaks(energy, prominence=6.0, distance=max(1, round(0.1 / hop_s)))
    return np.array(
        stats(f0[voiced], times[voiced]) + stats(energy[active], times[active])
        + [float(voiced.mean()), len(peaks) / duration, duration], dtype=np.float32)
