"""Helpers the dataset plugins share: checking audio files and counting exclusions.

Skipped items are counted on the corpus (``Corpus.skip``) and reported by the core, once.
"""

from __future__ import annotations

from pathlib import Path

from emoplug import MISSING_AUDIO, Corpus


def audio_problem(path: Path) -> str | None:
    """Why the WAV at ``path`` cannot be used (:data:`emoplug.MISSING_AUDIO` or
    ``unreadable WAV``), or None.

    Reads only the file header, so checking ten thousand files takes well under a second.
    """
    import soundfile

    if not path.is_file():
        return MISSING_AUDIO
    try:
        info = soundfile.info(str(path))
    except Exception:  # soundfile raises several types for broken or foreign files
        return "unreadable WAV"
    if info.frames == 0:
        return "unreadable WAV"
    return None


def count_excluded(corpus: Corpus, reason: str) -> None:
    """Count an utterance left out on purpose (e.g. a label outside the label set).

    Exclusions are expected and not warned about; they live in ``corpus.meta["excluded"]``,
    which ``emoplug validate``, ``emoplug data summary``, ``plan.json``, each
    ``result.json`` and the report show.
    """
    excluded = corpus.meta.setdefault("excluded", {})
    excluded[reason] = excluded.get(reason, 0) + 1
