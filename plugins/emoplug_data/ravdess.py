"""The ``ravdess`` dataset: RAVDESS's audio-only files in their published layout.

``Actor_01/03-01-06-01-02-01-01.wav``: modality, vocal channel, emotion, intensity, statement,
repetition, actor. Speech (vocal channel 01) of the audio-only modality (03) is kept; song
(02) is excluded unless ``include_song``. Session = actor; the statement is the transcript.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from emoplug import ComponentConfig
from emoplug_data.filecodes import BadName, CodedFile, FileCodeDataset, PublishedCounts

EMOTION_CODES: dict[str, str] = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
    "06": "fearful", "07": "disgusted", "08": "surprised",
}
STATEMENTS: dict[str, str] = {
    "01": "Kids are talking by the door",
    "02": "Dogs are sitting by the door",
}
INTENSITIES: dict[str, str] = {"01": "normal", "02": "strong"}
PUBLISHED = PublishedCounts(
    source="Livingstone & Russo 2018: 1,440 audio-only speech files, 24 actors x 60",
    per_label={label: 96 if label == "neutral" else 192 for label in EMOTION_CODES.values()})


class RavdessConfig(ComponentConfig):
    root: Path = Field(description="the folder holding Actor_01 .. Actor_24")
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: all eight (seven when "
                          "calm is merged into neutral)")
    merge_calm_into_neutral: bool = Field(False, description="count calm as neutral")
    include_song: bool = Field(False, description="keep the song files (vocal channel 02)")


class RavdessDataset(FileCodeDataset):
    """RAVDESS (Livingstone & Russo, 2018), audio-only speech files."""

    name: ClassVar[str] = "ravdess"
    Config: ClassVar[type[RavdessConfig]] = RavdessConfig
    corpus_name: ClassVar[str] = "RAVDESS"
    emotions: ClassVar[tuple[str, ...]] = tuple(EMOTION_CODES.values())
    published: ClassVar[PublishedCounts] = PUBLISHED

    def label_plan(self) -> tuple[tuple[str, ...], dict[str, str]]:
        mapping = {e: e for e in self.emotions}
        if self.config.merge_calm_into_neutral:
            mapping["calm"] = "neutral"
        default = tuple(dict.fromkeys(mapping.values()))
        return tuple(self.config.labels or default), mapping

    def wav_folder(self, root: Path) -> Path:
        return root

    def parse(self, path: Path) -> CodedFile:
        coded = parse_name(path.stem)
        if coded.meta["vocal_channel"] == "song" and self.config.include_song:
            return CodedFile(coded.id, coded.speaker, coded.emotion, coded.text, coded.meta,
                             published=False)
        return coded


def parse_name(stem: str) -> CodedFile:
    """What a RAVDESS file name (without ``.wav``) says; raises :class:`BadName`."""
    parts = stem.split("-")
    if len(parts) != 7 or not all(len(p) == 2 and p.isdigit() for p in parts):
        raise BadName("expected seven 2-digit codes, e.g. 03-01-06-01-02-01-12")
    modality, channel, emotion, intensity, statement, repetition, actor = parts
    if emotion not in EMOTION_CODES:
        raise BadName(f"unknown emotion code {emotion}")
    if channel not in ("01", "02") or intensity not in INTENSITIES or statement not in STATEMENTS:
        raise BadName("vocal channel, intensity or statement code out of range")
    if not 1 <= int(actor) <= 24:
        raise BadName(f"actor {actor} outside 01-24")
    speech = channel == "01"
    excluded = None
    if modality != "03":
        excluded = f"modality {modality} (not audio-only)"
    elif not speech:
        excluded = "vocal channel 02 (song)"
    return CodedFile(
        id=stem, speaker=f"Actor_{actor}", emotion=EMOTION_CODES[emotion],
        text=STATEMENTS[statement],
        meta={"gender": "M" if int(actor) % 2 else "F", "intensity": INTENSITIES[intensity],
              "statement": statement, "repetition": int(repetition),
              "vocal_channel": "speech" if speech else "song"},
        published=modality == "03" and speech, excluded=excluded)
