"""The ``msp_podcast`` dataset: the MSP-Podcast corpus in its released layout.

``Labels/labels_consensus.csv`` (one row per speaking turn: ``FileName, EmoClass, EmoAct,
EmoVal, EmoDom, SpkrID, Gender, Split_Set``), ``Audios/<FileName>`` and, where present,
``Transcripts/<stem>.txt``. The consensus label is the primary emotion's code; arousal
(``EmoAct``), valence and dominance are averaged ratings on a 1-7 scale. ``Split_Set`` is the
official partition (``Train``, ``Development``, ``Test1``, ``Test2``, ...), which the
``official_partitions`` protocol splits by.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from emoplug import ComponentConfig, Corpus, Dataset, EmoplugError, SettingError, Utterance
from emoplug_data.common import audio_problem, count_excluded, note
from emoplug_data.filecodes import PublishedCounts
from emoplug_data.partitions import PARTITION, PartitionedInfo, partition_meta
from emoplug_data.tables import csv_rows, read_utf8

#: EmoClass codes and the label names emoplug uses for them (the corpus's documentation)
EMOTION_CODES: dict[str, str] = {
    "A": "angry", "S": "sad", "H": "happy", "U": "surprised", "F": "fearful",
    "D": "disgusted", "C": "contempt", "N": "neutral", "O": "other", "X": "no_agreement",
}
#: kept by default: the eight primary emotions (O: other, X: no agreement are left out)
DEFAULT_LABELS = tuple(EMOTION_CODES[c] for c in "ASHUFDCN")
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
#: the official partitions in the corpus's order; a release may add others
PARTITIONS = ("Train", "Development", "Test1", "Test2", "Test3")
PUBLISHED = PublishedCounts(
    source="MSP-Podcast website, release 1.11: 151,654 speaking turns; it publishes no "
           "per-emotion counts",
    per_label={"Train": 84030, "Development": 19815, "Test1": 30647, "Test2": 14815,
               "Test3": 2347},
    unit="partition")
LABELS_CSV = Path("Labels") / "labels_consensus.csv"
UNKNOWN = "Unknown"


class MspPodcastConfig(ComponentConfig):
    root: Path = Field(description="the MSP-Podcast folder (holding Labels/ and Audios/)")
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: the eight primary emotions "
                          "(not other, no_agreement)")


class MspPodcastDataset(Dataset):
    """MSP-Podcast (Lotfian & Busso, 2019) from ``Labels/labels_consensus.csv``."""

    name: ClassVar[str] = "msp_podcast"
    Config: ClassVar[type[MspPodcastConfig]] = MspPodcastConfig
    location_fields: ClassVar[tuple[str, ...]] = ("root",)

    def check(self) -> list[SettingError]:
        return [SettingError("labels", f"'{label}' is not an msp_podcast label "
                                       f"({', '.join(EMOTION_CODES.values())})")
                for label in self.config.labels or () if label not in EMOTION_CODES.values()]

    def root(self) -> Path:
        root = self.config.root.expanduser()
        if not root.is_dir():
            raise EmoplugError(f"dataset.root: {root} does not exist" if not root.exists()
                               else f"dataset.root: {root} is not a folder")
        if not (root / LABELS_CSV).is_file():
            raise EmoplugError(f"dataset.root: {root} has no {LABELS_CSV.as_posix()}; is it "
                               "the MSP-Podcast folder (see docs/datasets.md)?")
        return root

    @cached_property
    def rows(self) -> list[tuple[str, dict[str, str]]]:
        """``(file:line, row)`` of the labels file; a malformed file or row is one error."""
        path = self.root() / LABELS_CSV
        rows = [(f"{LABELS_CSV.as_posix()}:{n}", row) for n, row in csv_rows(
            read_utf8(path, "dataset.root"), LABELS_CSV.as_posix(), key="dataset.root")]
        header = set().union(*(row.keys() for _, row in rows)) if rows else set()
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise EmoplugError(f"dataset.root: {LABELS_CSV.as_posix()} has no column "
                               f"{', '.join(missing)} (expected {', '.join(COLUMNS)})")
        for where, row in rows:
            if not row["FileName"].strip():
                raise EmoplugError(f"dataset.root: {where}: empty FileName")
            code = row["EmoClass"].strip()
            if code and code not in EMOTION_CODES:
                raise EmoplugError(f"dataset.root: {where}: unknown EmoClass '{code}' "
                                   f"(expected one of {', '.join(EMOTION_CODES)})")
        return rows

    def describe(self) -> PartitionedInfo:
        present = {row["Split_Set"].strip() for _, row in self.rows}
        names = tuple(p for p in PARTITIONS if p in present) + tuple(
            sorted(present - set(PARTITIONS) - {""}))
        utterances = [self.identity(row) for _, row in self.rows]
        return PartitionedInfo(sessions=tuple(sorted({s for s, _ in utterances})),
                               speakers=tuple(sorted({p for _, p in utterances})),
                               partitions=names, train=("Train",), dev="Development",
                               test=("Test1",))

    @staticmethod
    def identity(row: dict[str, str]) -> tuple[str, str]:
        """(session, speaker) of a row: the podcast (the first number of the file name) and
        the speaker id, or ``unknown_<podcast>`` where the corpus does not know it."""
        stem = Path(row["FileName"].strip()).stem
        parts = stem.split("_")
        podcast = parts[1] if len(parts) >= 3 else stem
        speaker = row["SpkrID"].strip()
        return podcast, speaker if speaker and speaker != UNKNOWN else f"unknown_{podcast}"

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        root = self.root()
        info = self.describe()
        labels = tuple(self.config.labels or DEFAULT_LABELS)
        corpus = Corpus(self.name, labels, [], avd_scale=(1.0, 7.0),
                        meta={"root": str(root), "partitions": partition_meta(info)})
        transcripts = root / "Transcripts"
        untranscribed = 0
        found: Counter[str] = Counter()
        for where, row in self.rows:
            partition = row["Split_Set"].strip()
            found[partition] += 1
            if not partition:
                count_excluded(corpus, "no Split_Set")
                continue
            code = row["EmoClass"].strip()
            if not code:
                count_excluded(corpus, "no EmoClass (labels not released)")
                continue
            label = EMOTION_CODES[code]
            if label not in labels:
                count_excluded(corpus, f"label {label} outside the label set")
                continue
            try:
                avd = _avd(row)
            except ValueError:
                corpus.skip("non-numeric EmoVal/EmoAct/EmoDom", where)
                continue
            file_name = row["FileName"].strip()
            audio = root / "Audios" / file_name
            problem = audio_problem(audio, corpus) if need_audio else None
            if problem:
                corpus.skip(problem, str(audio))
                continue
            text = None
            if transcripts.is_dir():
                text = _transcript(transcripts / f"{Path(file_name).stem}.txt")
                untranscribed += text is None
            session, speaker = self.identity(row)
            corpus.utterances.append(Utterance(
                id=Path(file_name).stem, speaker=speaker, session=session, text=text,
                audio=str(audio), label=label, avd=avd,
                meta={PARTITION: partition, "gender": row["Gender"].strip() or None,
                      "speaker_known": row["SpkrID"].strip() not in ("", UNKNOWN),
                      "code": code}))
        if untranscribed:
            note(corpus, f"{untranscribed} utterances of msp_podcast have no transcript in "
                         "Transcripts/: cells that read text leave them out")
        corpus.meta["published_counts"] = PUBLISHED.check(found)
        return corpus


def _avd(row: dict[str, str]) -> tuple[float, float, float] | None:
    """(valence, arousal, dominance) from EmoVal, EmoAct, EmoDom; NaN where empty."""
    values = [float(row[c]) if row[c].strip() else math.nan
              for c in ("EmoVal", "EmoAct", "EmoDom")]
    return None if all(math.isnan(v) for v in values) else (values[0], values[1], values[2])


def _transcript(path: Path) -> str | None:
    """A transcript file's text, or None when it is missing or empty."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    return text or None

