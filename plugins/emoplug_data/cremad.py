"""The ``cremad`` dataset: CREMA-D's ``AudioWAV`` folder in its published layout.

``AudioWAV/1001_DFA_ANG_XX.wav``: actor (1001-1091), sentence code, emotion, intensity level.
Session = actor; the sentence code gives the transcript. The labels are the intended
emotions of the file names; the tabulated crowd votes are not read (yet).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from emoplug import ComponentConfig
from emoplug_data.filecodes import BadName, CodedFile, FileCodeDataset, PublishedCounts

EMOTION_CODES: dict[str, str] = {
    "ANG": "angry", "DIS": "disgusted", "FEA": "fearful", "HAP": "happy", "NEU": "neutral",
    "SAD": "sad",
}
SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
LEVELS: dict[str, str] = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
PUBLISHED = PublishedCounts(
    source="Cao et al. 2014: 7,442 clips of 91 actors",
    per_label={label: 1087 if label == "neutral" else 1271
               for label in EMOTION_CODES.values()})

_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


class CremadConfig(ComponentConfig):
    root: Path = Field(description="the CREMA-D folder (holding AudioWAV/) or AudioWAV/ itself")
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: all six")


class CremadDataset(FileCodeDataset):
    """CREMA-D (Cao et al., 2014) from its ``AudioWAV`` folder."""

    name: ClassVar[str] = "cremad"
    Config: ClassVar[type[CremadConfig]] = CremadConfig
    corpus_name: ClassVar[str] = "CREMA-D"
    emotions: ClassVar[tuple[str, ...]] = tuple(EMOTION_CODES.values())
    published: ClassVar[PublishedCounts] = PUBLISHED

    def wav_folder(self, root: Path) -> Path:
        return root / "AudioWAV" if (root / "AudioWAV").is_dir() else root

    def parse(self, path: Path) -> CodedFile:
        return parse_name(path.stem)


def parse_name(stem: str) -> CodedFile:
    """What a CREMA-D file name (without ``.wav``) says; raises :class:`BadName`."""
    match = _NAME.match(stem)
    if match is None:
        raise BadName("expected actor_sentence_emotion_level, e.g. 1001_DFA_ANG_XX")
    actor, sentence, emotion, level = match.groups()
    if not 1001 <= int(actor) <= 1091:
        raise BadName(f"actor {actor} outside 1001-1091")
    if sentence not in SENTENCES:
        raise BadName(f"unknown sentence code {sentence}")
    if emotion not in EMOTION_CODES:
        raise BadName(f"unknown emotion code {emotion}")
    if level not in LEVELS:
        raise BadName(f"unknown level {level}")
    return CodedFile(id=stem, speaker=actor, emotion=EMOTION_CODES[emotion],
                     text=SENTENCES[sentence],
                     meta={"sentence": sentence, "level": LEVELS[level]})
