"""The ``cremad`` dataset: CREMA-D's ``AudioWAV`` folder in its published layout.

``AudioWAV/1001_DFA_ANG_XX.wav``: actor (1001-1091), sentence code, emotion, intensity level.
Session = actor; the sentence code gives the transcript. The label is the intended emotion of
the file name (``label: filename``) or the majority of the crowd's ratings in
``processedResults/tabulatedVotes.csv`` (``label: votes``, :mod:`emoplug_data.cremad_votes`).
"""

from __future__ import annotations

import dataclasses
import re
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from emoplug import ComponentConfig, Corpus, EmoplugError, SettingError
from emoplug_data.cremad_votes import VOTES_CSV, VoteTally, read_votes
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

#: the settings that only ``label: votes`` reads
VOTE_SETTINGS = frozenset({"votes_from", "ties", "min_agreement", "votes_path"})

_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


class CremadConfig(ComponentConfig):
    root: Path = Field(description="the CREMA-D folder (holding AudioWAV/) or AudioWAV/ itself")
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: all six")
    label: Literal["filename", "votes"] = Field(
        "filename", description="filename: the emotion the actor was asked to express; "
                                "votes: the majority of the crowd's perceptual ratings")
    votes_from: Literal["voice", "face", "audiovisual"] = Field(
        "voice", description="votes: which ratings count (voice = audio-only clips)")
    ties: Literal["exclude", "intended"] = Field(
        "exclude", description="votes: a tied majority is excluded, or labelled with the "
                               "intended emotion when that is one of the tied")
    min_agreement: float = Field(
        0.0, ge=0, le=1, description="votes: exclude files whose majority share of the "
                                     "ratings is below this")
    votes_path: Path | None = Field(
        None, description="votes: the tabulated votes; default: "
                          "<root>/processedResults/tabulatedVotes.csv")


class CremadDataset(FileCodeDataset):
    """CREMA-D (Cao et al., 2014) from its ``AudioWAV`` folder."""

    name: ClassVar[str] = "cremad"
    Config: ClassVar[type[CremadConfig]] = CremadConfig
    location_fields: ClassVar[tuple[str, ...]] = ("root", "votes_path")
    corpus_name: ClassVar[str] = "CREMA-D"
    emotions: ClassVar[tuple[str, ...]] = tuple(EMOTION_CODES.values())
    published: ClassVar[PublishedCounts] = PUBLISHED

    def wav_folder(self, root: Path) -> Path:
        return root / "AudioWAV" if (root / "AudioWAV").is_dir() else root

    def parse(self, path: Path) -> CodedFile:
        return parse_name(path.stem)

    def check(self) -> list[SettingError]:
        """The file-code checks, and vote settings changed from their defaults without
        ``label: votes`` (they would be ignored)."""
        fields = CremadConfig.model_fields
        ignored = [name for name in sorted(VOTE_SETTINGS) if self.config.label == "filename"
                   and getattr(self.config, name) != fields[name].default]
        return super().check() + [SettingError(name, "applies only with label: votes")
                                  for name in ignored]

    def votes_file(self) -> tuple[Path, str]:
        """The tabulated votes and the recipe key that names them."""
        if self.config.votes_path is not None:
            return self.config.votes_path.expanduser(), "dataset.votes_path"
        root = self.config.root.expanduser()
        base = root.parent if root.name == "AudioWAV" else root
        return base / VOTES_CSV, "dataset.root"

    @cached_property
    def tally(self) -> VoteTally:
        path, key = self.votes_file()
        if not path.is_file():
            raise EmoplugError(f"{key}: {path} does not exist (label: votes reads CREMA-D's "
                               f"{VOTES_CSV.as_posix()}; set dataset.votes_path)")
        return read_votes(path, key, self.config.votes_from, EMOTION_CODES,
                          ties=self.config.ties, min_agreement=self.config.min_agreement)

    def relabel(self, coded: CodedFile) -> CodedFile:
        if self.config.label == "filename" or coded.excluded:
            return coded
        vote = self.tally.vote(coded.id, coded.emotion)
        return dataclasses.replace(coded, emotion=vote.emotion or coded.emotion,
                                   excluded=vote.excluded, meta={**coded.meta, **vote.meta})

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        if self.config.label == "votes":
            self.tally.reset()
        corpus = super().load(need_audio=need_audio, cache_dir=cache_dir)
        if self.config.label == "votes":
            corpus.meta["label_source"] = self.tally.summary()
        return corpus


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
