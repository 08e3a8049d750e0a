"""Helpers the dataset plugins share: checking audio files and reporting skipped items once."""

from __future__ import annotations

import sys
from pathlib import Path

from emoplug import Corpus


def audio_problem(path: Path) -> str | None:
    """Why the WAV at ``path`` cannot be used (``missing WAV``/``unreadable WAV``), or None.

    Reads only the file header, so checking ten thousand files takes well under a second.
    """
    import soundfile

    if not path.is_file():
        return "missing WAV"
    try:
        info = soundfile.info(str(path))
    except Exception:  # soundfile raises several types for broken or foreign files
        return "unreadable WAV"
    if info.frames == 0:
        return "unreadable WAV"
    return None


def report_skipped(corpus: Corpus) -> None:
    """Print one warning line summarising ``corpus.skipped`` (nothing when it is empty)."""
    if not corpus.skipped:
        return
    total = sum(corpus.skipped.values())
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(corpus.skipped.items()))
    print(f"emoplug: warning: {corpus.name}: skipped {total} item(s) ({reasons}); "
          "'emoplug data summary' lists examples", file=sys.stderr)


def count_excluded(corpus: Corpus, reason: str) -> None:
    """Count an utterance left out on purpose (e.g. a label outside the label set).

    Exclusions are expected and not warned about; they live in ``corpus.meta["excluded"]``
    so that ``emoplug data summary`` can show them.
    """
    excluded = corpus.meta.setdefault("excluded", {})
    excluded[reason] = excluded.get(reason, 0) + 1
