"""Reading audio files: any format libsndfile reads (WAV, FLAC, ...) -> float32 mono."""

from __future__ import annotations

import os

import numpy as np

from emoplug.errors import EmoplugError


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The file at ``path`` as a float32 mono waveform at ``sample_rate``.

    Channels are averaged; other rates are resampled with soxr (librosa's ``soxr_hq``).
    Raises :class:`EmoplugError` naming the file when it cannot be read, holds no samples
    or holds non-finite samples.
    """
    import soundfile as sf

    try:
        data, file_rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise EmoplugError(f"cannot read audio file {path}: {exc}") from exc
    if data.shape[0] == 0:
        raise EmoplugError(f"audio file {path} is empty (0 samples)")
    waveform = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(waveform).all():
        raise EmoplugError(f"audio file {path} contains NaN or infinite samples")
    if file_rate != sample_rate:
        import librosa

        waveform = librosa.resample(waveform, orig_sr=file_rate, target_sr=sample_rate,
                                    res_type="soxr_hq")
    return np.ascontiguousarray(waveform, dtype=np.float32)
