"""The leakage audit of a fold: what its test utterances share with its train and dev parts.

For each fold, count the test utterances whose speaker, session, dialog or normalised
transcript also occurs in train, and separately in dev. A speaker-independent protocol has 0
test speakers in train; leave-one-session-out has 0 sessions and dialogs in common, yet
IEMOCAP's scripted dialogues repeat their lines across sessions, so transcripts still overlap.
Dialogs come from ``Utterance.meta["dialog"]`` when the dataset knows them (``None`` = not
known for this corpus, shown as a dash, not as 0).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from emoplug.types import Fold, Utterance

#: what the audit compares, in the order it is shown
AUDIT_KEYS = ("speaker", "session", "dialog", "transcript")
_PUNCTUATION = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def normalise_transcript(text: str | None) -> str | None:
    """Lower-cased, punctuation removed, runs of spaces made one; ``None`` when nothing is left.
    ``"Oh,  I can't!"`` -> ``"oh i cant"``."""
    if not text:
        return None
    folded = unicodedata.normalize("NFKC", text).lower()
    words = _SPACES.sub(" ", _PUNCTUATION.sub("", folded)).strip()
    return words or None


def _value(utterance: Utterance, key: str) -> str | None:
    if key == "transcript":
        return normalise_transcript(utterance.text)
    if key == "dialog":
        dialog = utterance.meta.get("dialog")
        return None if dialog is None else str(dialog)
    return getattr(utterance, key)


def _shared(test: list[Utterance], other: list[Utterance], key: str) -> int | None:
    """Test utterances whose ``key`` value occurs in ``other``; None when the corpus has no
    value of ``key`` at all (e.g. no dialogs)."""
    seen = {v for v in (_value(u, key) for u in other) if v is not None}
    values = [_value(u, key) for u in test]
    if not seen and all(v is None for v in values):
        return None
    return sum(v is not None and v in seen for v in values)


def audit_fold(fold: Fold, by_id: Mapping[str, Utterance]) -> dict[str, Any]:
    """``{"test": n, "train": {key: count}, "dev": {key: count}}`` for one fold (counts of
    test utterances; ``None`` for a key the corpus does not record)."""
    parts = {name: [by_id[i] for i in getattr(fold, name) if i in by_id]
             for name in ("train", "dev", "test")}
    return {"test": len(parts["test"]),
            **{name: {key: _shared(parts["test"], parts[name], key) for key in AUDIT_KEYS}
               for name in ("train", "dev")}}


def speaker_leak_warning(protocol: str, folds: Iterable[Fold]) -> str | None:
    """One line when some fold puts test speakers in train, else None."""
    folds = list(folds)
    leaking = [f for f in folds if (f.meta.get("audit") or {}).get("train", {}).get("speaker")]
    if not leaking:
        return None
    shared = sum(f.meta["audit"]["train"]["speaker"] for f in leaking)
    tested = sum(f.meta["audit"]["test"] for f in folds)
    return (f"emoplug: warning: protocol '{protocol}' puts test speakers in train in "
            f"{len(leaking)} of {len(folds)} folds ({shared} of {tested} test utterances have "
            "a speaker seen in training): scores are speaker-dependent")
