"""The leakage audit of a fold: what its test utterances share with its train and dev parts,
and what its dev utterances share with train.

For each fold, count the test utterances whose speaker, session, dialog or normalised
transcript also occurs in train, and separately in dev; and the dev utterances that share each
with train (``dev_vs_train``: the overlap behind an optimistic dev score). A
speaker-independent protocol has 0 test speakers in train; leave-one-session-out has 0
sessions and dialogs in common, yet IEMOCAP's scripted dialogues repeat their lines across
sessions, so transcripts still overlap. Dialogs come from ``Utterance.meta["dialog"]`` when the
dataset knows them (``None`` = not known for this corpus, shown as a dash, not as 0).

A shared transcript counts only from ``MIN_TRANSCRIPT_WORDS`` words after normalisation: a
repeated script line is a leak, a shared "yeah" or "okay" is not. Shorter shared transcripts
(backchannels) are counted on their own under ``short_transcript``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from emoplug.types import Fold, Utterance

#: what the audit compares, in the order it is shown
AUDIT_KEYS = ("speaker", "session", "dialog", "transcript", "short_transcript")
#: fewest words (after ``normalise_transcript``) of a transcript whose repetition counts as
#: a shared transcript; shorter ones count as ``short_transcript``
MIN_TRANSCRIPT_WORDS = 4
#: non-verbal events in brackets: ``[LAUGHTER]``, ``[BREATHING]``, ``<sil>``
_EVENTS = re.compile(r"\[[^\]]*\]|<[^>]*>")
#: anything but word characters, spaces and apostrophes
_PUNCTUATION = re.compile(r"[^\w\s']")
#: an apostrophe that is not inside a word (quotes: ``'so'``)
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")


def normalise_transcript(text: str | None) -> str | None:
    """Lower-cased, bracketed events dropped, punctuation removed except apostrophes inside
    words, runs of spaces made one; ``None`` when nothing is left.
    ``"Oh,  I can't! [LAUGHTER]"`` -> ``"oh i can't"``; ``"We’ll"`` -> ``"we'll"``."""
    if not text:
        return None
    folded = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    words = _PUNCTUATION.sub(" ", _EVENTS.sub(" ", folded))
    words = _SPACES.sub(" ", _LOOSE_APOSTROPHE.sub("", words)).strip()
    return words or None


def _value(utterance: Utterance, key: str) -> str | None:
    if key in ("transcript", "short_transcript"):
        text = normalise_transcript(utterance.text)
        if text is None:
            return None
        long = len(text.split()) >= MIN_TRANSCRIPT_WORDS
        return text if long == (key == "transcript") else None
    if key == "dialog":
        dialog = utterance.meta.get("dialog")
        return None if dialog is None else str(dialog)
    return getattr(utterance, key)


def _recorded(utterance: Utterance, key: str) -> bool:
    """The corpus records ``key`` for this utterance (a transcript of any length)."""
    if key in ("transcript", "short_transcript"):
        return normalise_transcript(utterance.text) is not None
    return _value(utterance, key) is not None


def _shared(test: list[Utterance], other: list[Utterance], key: str) -> int | None:
    """Utterances of ``test`` whose ``key`` value occurs in ``other``; None when the corpus
    has no value of ``key`` at all (e.g. no dialogs)."""
    if not any(_recorded(u, key) for u in (*test, *other)):
        return None
    seen = {v for v in (_value(u, key) for u in other) if v is not None}
    return sum(v is not None and v in seen for v in (_value(u, key) for u in test))


def audit_fold(fold: Fold, by_id: Mapping[str, Utterance]) -> dict[str, Any]:
    """``{"test": n, "train": {key: count}, "dev": {key: count}, "dev_vs_train": {"dev": m,
    key: count}}`` for one fold: counts of test utterances sharing each key with train and
    with dev, and of dev utterances sharing each with train (``None`` for a key the corpus
    does not record)."""
    parts = {name: [by_id[i] for i in getattr(fold, name) if i in by_id]
             for name in ("train", "dev", "test")}
    return {"test": len(parts["test"]),
            **{name: {key: _shared(parts["test"], parts[name], key) for key in AUDIT_KEYS}
               for name in ("train", "dev")},
            "dev_vs_train": {"dev": len(parts["dev"]),
                             **{key: _shared(parts["dev"], parts["train"], key)
                                for key in AUDIT_KEYS}}}


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
