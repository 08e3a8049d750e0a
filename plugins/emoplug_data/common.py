"""Helpers the dataset plugins share: checking audio files and counting exclusions.

Skipped items are counted on the corpus (``Corpus.skip``) and reported by the core, once;
warnings about the data (:func:`note`) are printed by the core, once.
"""

from __future__ import annotations

import os
from pathlib import Path

from emoplug import MISSING_AUDIO, Corpus


def audio_problem(path: Path, corpus: Corpus | None = None) -> str | None:
    """Why the WAV at ``path`` cannot be used (:data:`emoplug.MISSING_AUDIO`,
    ``unreadable WAV`` or ``NaN or infinite samples``), or None. A WAV cut off mid-data
    (its header promises more samples than the file holds) is usable, as the shorter clip it
    holds; it is listed in ``corpus.meta["cut_short"]`` for the core's one warning.

    Reads the file header; only floating-point WAVs (whose samples can be NaN) are read
    whole, so checking ten thousand PCM files takes well under a second.
    """
    import numpy as np
    import soundfile

    if not path.is_file():
        return MISSING_AUDIO
    try:
        info = soundfile.info(str(path))
        if info.frames and info.subtype in ("FLOAT", "DOUBLE"):
            samples, _ = soundfile.read(str(path), dtype="float32")
            if not np.isfinite(samples).all():
                return "NaN or infinite samples"
    except Exception:  # soundfile raises several types for broken or foreign files
        return "unreadable WAV"
    if info.frames == 0:
        return "unreadable WAV"
    if corpus is not None and _cut_short(path):
        corpus.meta.setdefault("cut_short", []).append(str(path))
    return None


def _cut_short(path: Path) -> bool:
    """Whether a RIFF/WAVE file's ``data`` chunk declares more bytes than the file holds (a
    copy or download cut off); the size a streaming writer leaves unset (0 or all ones)
    declares nothing."""
    with path.open("rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        size = os.fstat(f.fileno()).st_size
        position = 12
        while position + 8 <= size:
            f.seek(position)
            chunk = f.read(8)
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return length not in (0, 0xFFFFFFFF) and position + 8 + length > size
            position += 8 + length + (length & 1)
    return False


def count_excluded(corpus: Corpus, reason: str) -> None:
    """Count an utterance left out on purpose (e.g. a label outside the label set).

    Exclusions are expected and not warned about; they live in ``corpus.meta["excluded"]``,
    which ``emoplug validate``, ``emoplug data summary``, ``plan.json``, each
    ``result.json`` and the report show.
    """
    excluded = corpus.meta.setdefault("excluded", {})
    excluded[reason] = excluded.get(reason, 0) + 1


def note(corpus: Corpus, warning: str) -> None:
    """Keep a one-line warning about the data (``corpus.meta["warnings"]``): ``emoplug
    validate`` and the start of a run print each once."""
    warnings = corpus.meta.setdefault("warnings", [])
    if warning not in warnings:
        warnings.append(warning)
