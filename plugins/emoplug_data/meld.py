"""The ``meld`` dataset: MELD's published CSVs with the audio the user extracted.

``train_sent_emo.csv``, ``dev_sent_emo.csv``, ``test_sent_emo.csv`` (one row per utterance:
``Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season, Episode,
StartTime, EndTime``). MELD ships video clips (``dia{D}_utt{U}.mp4``); the user extracts each
clip's audio to a WAV, found by ``audio_pattern``. The transcript is the CSV's ``Utterance``,
the speaker the character's name; the CSV a row comes from is its official partition.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from emoplug import (
    MISSING_AUDIO,
    ComponentConfig,
    Corpus,
    Dataset,
    EmoplugError,
    SettingError,
    Utterance,
)
from emoplug_data.common import audio_problem, count_excluded
from emoplug_data.filecodes import PublishedCounts
from emoplug_data.partitions import PARTITION, PartitionedInfo, partition_meta
from emoplug_data.tables import csv_rows, read_utf8

SPLITS = ("train", "dev", "test")
EMOTIONS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
SENTIMENTS = ("negative", "neutral", "positive")
COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
#: MELD's README ("Dataset Distribution"): utterances per emotion in train / dev / test
PUBLISHED_BY_SPLIT: dict[str, tuple[int, int, int]] = {
    "anger": (1109, 153, 345), "disgust": (271, 22, 68), "fear": (268, 40, 50),
    "joy": (1743, 163, 402), "neutral": (4710, 470, 1256), "sadness": (683, 111, 208),
    "surprise": (1205, 150, 281),
}
PUBLISHED = PublishedCounts(
    source="MELD README (github.com/declare-lab/MELD): 13,708 utterances, train 9,989 / "
           "dev 1,109 / test 2,610",
    per_label={f"{emotion} ({split})": n for split, column in zip(
        SPLITS, zip(*PUBLISHED_BY_SPLIT.values(), strict=True), strict=True)
        for emotion, n in zip(PUBLISHED_BY_SPLIT, column, strict=True)},
    unit="emotion (split)")


class MeldConfig(ComponentConfig):
    root: Path = Field(description="the folder holding train_sent_emo.csv, dev_sent_emo.csv "
                                   "and test_sent_emo.csv")
    audio_root: Path | None = Field(None, description="the folder of the extracted WAVs; "
                                                      "default: root")
    audio_pattern: str = Field(
        "{split}/dia{dialogue}_utt{utterance}.wav",
        description="each WAV's path under audio_root; {split} is the split's folder "
                    "(split_folders), {dialogue} and {utterance} MELD's ids")
    split_folders: dict[str, str] = Field(
        default_factory=lambda: {split: split for split in SPLITS},
        description="the folder name of each split's WAVs, e.g. {train: train_splits, dev: "
                    "dev_splits_complete, test: output_repeated_splits_test}")
    missing_audio: Literal["error", "skip"] = Field(
        "error", description="a WAV the pattern names that does not exist: an error at "
                             "validate and run, or skipped and counted ('no extracted WAV')")
    target: Literal["emotion", "sentiment"] = Field(
        "emotion", description="the label: the Emotion column (7 classes) or Sentiment (3)")
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: all of the target's")


class MeldDataset(Dataset):
    """MELD (Poria et al., 2019) from its CSVs and the user's extracted WAVs."""

    name: ClassVar[str] = "meld"
    Config: ClassVar[type[MeldConfig]] = MeldConfig
    location_fields: ClassVar[tuple[str, ...]] = ("root", "audio_root")

    def all_labels(self) -> tuple[str, ...]:
        return EMOTIONS if self.config.target == "emotion" else SENTIMENTS

    def check(self) -> list[SettingError]:
        problems = [SettingError("labels", f"'{label}' is not a meld {self.config.target} "
                                           f"label ({', '.join(self.all_labels())})")
                    for label in self.config.labels or () if label not in self.all_labels()]
        missing = [s for s in SPLITS if s not in self.config.split_folders]
        if missing:
            problems.append(SettingError("split_folders", f"names no folder for "
                                                          f"{', '.join(missing)}"))
        try:
            self.config.audio_pattern.format(split="s", dialogue=0, utterance=0)
        except (KeyError, IndexError, ValueError) as exc:
            problems.append(SettingError("audio_pattern", f"{self.config.audio_pattern!r} "
                                         f"does not format ({exc!r}); use {{split}}, "
                                         "{dialogue} and {utterance}"))
        return problems

    def root(self) -> Path:
        root = self.config.root.expanduser()
        if not root.is_dir():
            raise EmoplugError(f"dataset.root: {root} does not exist" if not root.exists()
                               else f"dataset.root: {root} is not a folder")
        for split in SPLITS:
            if not (root / f"{split}_sent_emo.csv").is_file():
                raise EmoplugError(f"dataset.root: {root} has no {split}_sent_emo.csv; is it "
                                   "the folder of MELD's CSVs (see docs/datasets.md)?")
        return root

    @cached_property
    def rows(self) -> list[tuple[str, str, dict[str, str]]]:
        """``(split, file:line, row)`` of the three CSVs; a malformed file or row (a missing
        column, a non-numeric id, an unknown emotion) is one error naming file and line."""
        rows = []
        for split in SPLITS:
            name = f"{split}_sent_emo.csv"
            text = read_utf8(self.root() / name, "dataset.root")
            found = list(csv_rows(text, name, key="dataset.root"))
            header = set().union(*(row.keys() for _, row in found)) if found else set()
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise EmoplugError(f"dataset.root: {name} has no column {', '.join(missing)} "
                                   f"(expected {', '.join(COLUMNS)}, ...)")
            for n, row in found:
                where = f"{name}:{n}"
                for column in ("Dialogue_ID", "Utterance_ID"):
                    if not row[column].strip().isdigit():
                        raise EmoplugError(f"dataset.root: {where}: {column} "
                                           f"'{row[column]}' is not a number")
                for column, known in (("Emotion", EMOTIONS), ("Sentiment", SENTIMENTS)):
                    if row[column].strip().lower() not in known:
                        raise EmoplugError(f"dataset.root: {where}: unknown {column} "
                                           f"'{row[column]}' ({', '.join(known)})")
                rows.append((split, where, row))
        return rows

    def describe(self) -> PartitionedInfo:
        speakers = sorted({row["Speaker"].strip() for _, _, row in self.rows})
        sessions = sorted({_session(split, row) for split, _, row in self.rows})
        return PartitionedInfo(sessions=tuple(sessions), speakers=tuple(speakers),
                               partitions=SPLITS, train=("train",), dev="dev", test=("test",))

    def audio_path(self, split: str, row: dict[str, str]) -> Path:
        base = (self.config.audio_root or self.root()).expanduser()
        return base / self.config.audio_pattern.format(
            split=self.config.split_folders[split], dialogue=int(row["Dialogue_ID"]),
            utterance=int(row["Utterance_ID"]))

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        labels = tuple(self.config.labels or self.all_labels())
        corpus = Corpus(self.name, labels, [], meta={
            "root": str(self.root()), "partitions": partition_meta(self.describe())})
        found: Counter[str] = Counter()
        for split, where, row in self.rows:
            emotion = row["Emotion"].strip().lower()
            sentiment = row["Sentiment"].strip().lower()
            found[f"{emotion} ({split})"] += 1
            label = emotion if self.config.target == "emotion" else sentiment
            if label not in labels:
                count_excluded(corpus, f"label {label} outside the label set")
                continue
            text = row["Utterance"].strip()
            if not text:
                corpus.skip("no transcript", where)
                continue
            audio = self.audio_path(split, row)
            problem = audio_problem(audio, corpus) if need_audio else None
            if problem == MISSING_AUDIO and self.config.missing_audio == "skip":
                problem = "no extracted WAV"
            if problem:
                corpus.skip(problem, str(audio))
                continue
            dialogue, utterance = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
            corpus.utterances.append(Utterance(
                id=f"{split}_dia{dialogue}_utt{utterance}", speaker=row["Speaker"].strip(),
                session=_session(split, row), text=text, audio=str(audio), label=label,
                meta={PARTITION: split, "dialog": f"{split}_dia{dialogue}",
                      "emotion": emotion, "sentiment": sentiment,
                      **{k.lower(): row[k].strip() for k in ("Season", "Episode", "StartTime",
                                                             "EndTime") if k in row}}))
        corpus.meta["published_counts"] = PUBLISHED.check(found)
        return corpus


def _session(split: str, row: dict[str, str]) -> str:
    """The episode of Friends a row comes from (``S04E07``); its dialogue where the CSV
    has no Season/Episode."""
    season, episode = row.get("Season", "").strip(), row.get("Episode", "").strip()
    if season.isdigit() and episode.isdigit():
        return f"S{int(season):02d}E{int(episode):02d}"
    return f"{split}_dia{int(row['Dialogue_ID'])}"
