"""The ``emodb`` dataset: the Berlin Database of Emotional Speech in its published layout.

``wav/03a01Fa.wav``: speaker (2 digits), text code (3 characters), emotion letter, version
letter. Session = speaker. EmoDB has no transcript files, so ``text`` is None.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from emoplug import ComponentConfig
from emoplug_data.filecodes import BadName, CodedFile, FileCodeDataset, PublishedCounts

#: EmoDB's emotion letters (German initials) and the label names emoplug uses for them.
EMOTION_LETTERS: dict[str, str] = {
    "W": "angry", "L": "bored", "E": "disgusted", "A": "fearful", "F": "happy", "T": "sad",
    "N": "neutral",
}
#: the ten speakers and their gender (EmoDB's documentation)
SPEAKER_GENDERS: dict[str, str] = {
    "03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M", "13": "F", "14": "F",
    "15": "M", "16": "F",
}
PUBLISHED = PublishedCounts(
    source="Burkhardt et al. 2005, EmoDB website: 535 utterances, 10 speakers",
    per_label={"angry": 127, "bored": 81, "disgusted": 46, "fearful": 69, "happy": 71,
               "sad": 62, "neutral": 79})

_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])$")


class EmodbConfig(ComponentConfig):
    root: Path = Field(description="the EmoDB folder (holding wav/) or its wav/ folder")
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: all seven")


class EmodbDataset(FileCodeDataset):
    """Berlin EmoDB (Burkhardt et al., 2005) from its ``wav/`` folder."""

    name: ClassVar[str] = "emodb"
    Config: ClassVar[type[EmodbConfig]] = EmodbConfig
    corpus_name: ClassVar[str] = "EmoDB"
    emotions: ClassVar[tuple[str, ...]] = tuple(EMOTION_LETTERS.values())
    published: ClassVar[PublishedCounts] = PUBLISHED

    def wav_folder(self, root: Path) -> Path:
        return root / "wav" if (root / "wav").is_dir() else root

    def parse(self, path: Path) -> CodedFile:
        return parse_name(path.stem)


def parse_name(stem: str) -> CodedFile:
    """What an EmoDB file name (without ``.wav``) says; raises :class:`BadName`."""
    match = _NAME.match(stem)
    if match is None:
        raise BadName("expected speaker, text code, emotion and version, e.g. 03a01Fa")
    speaker, text_code, letter, version = match.groups()
    if letter not in EMOTION_LETTERS:
        raise BadName(f"unknown emotion letter {letter}")
    return CodedFile(id=stem, speaker=speaker, emotion=EMOTION_LETTERS[letter],
                     meta={"gender": SPEAKER_GENDERS.get(speaker), "text_code": text_code,
                           "version": version})
