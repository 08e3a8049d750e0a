"""What the corpora named by file-name codes (``emodb``, ``ravdess``, ``cremad``) share.

Each such corpus is a folder of WAVs whose names encode speaker, emotion and more; a subclass
of :class:`FileCodeDataset` says where the WAVs are and how one name parses. This module
lists the files, skips (and counts) the names that do not parse, keeps the chosen labels, and
checks the per-label counts against the numbers the corpus publishes
(``corpus.meta["published_counts"]``, which ``emoplug data summary`` prints).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from emoplug import Corpus, Dataset, DatasetInfo, EmoplugError, SettingError, Utterance
from emoplug_data.common import audio_problem, count_excluded

#: the skip reason of a WAV whose name does not follow the corpus's naming scheme
BAD_NAME = "file name does not parse"


class BadName(ValueError):
    """A file name that does not follow the corpus's scheme; the message says why."""


@dataclass(frozen=True)
class CodedFile:
    """What one file name says. ``published`` is False for files outside the part of the
    corpus whose counts are published (e.g. RAVDESS song); ``excluded`` names why a file is
    left out on purpose (None: kept when its label is)."""

    id: str
    speaker: str
    emotion: str
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    published: bool = True
    excluded: str | None = None


@dataclass(frozen=True)
class PublishedCounts:
    """A corpus's published utterances per emotion (or per ``unit``: ``partition`` where a
    corpus publishes only its partitions' sizes) and where the numbers come from."""

    source: str
    per_label: dict[str, int]
    unit: str = "emotion"

    def check(self, found: Counter[str]) -> dict[str, Any]:
        """Found vs published counts per label, how many files are present out of the
        published total, and whether they match exactly (the full corpus)."""
        labels = list(self.per_label) + sorted(set(found) - set(self.per_label))
        return {
            "source": self.source,
            "unit": self.unit,
            "per_label": {label: {"found": found.get(label, 0),
                                  "published": self.per_label.get(label, 0)}
                          for label in labels},
            "present": sum(found.values()),
            "published_total": sum(self.per_label.values()),
            "matches": dict(found) == {k: v for k, v in self.per_label.items() if v},
        }


class FileCodeDataset(Dataset):
    """A corpus read from the codes in its WAV file names. Subclasses set ``corpus_name``,
    ``emotions`` (every label the corpus has, in order), ``published`` and implement
    :meth:`wav_folder` and :meth:`parse`."""

    location_fields: ClassVar[tuple[str, ...]] = ("root",)
    corpus_name: ClassVar[str]
    emotions: ClassVar[tuple[str, ...]]
    published: ClassVar[PublishedCounts]

    def wav_folder(self, root: Path) -> Path:
        """The folder under ``root`` that holds the corpus's WAVs (searched recursively)."""
        raise NotImplementedError

    def parse(self, path: Path) -> CodedFile:
        """What the name of ``path`` says; raises :class:`BadName` saying why it does not
        parse."""
        raise NotImplementedError

    def relabel(self, coded: CodedFile) -> CodedFile:
        """The file as the chosen label source labels it (its ``emotion``, or ``excluded``
        saying why it has no label); by default the emotion its name encodes."""
        return coded

    def label_plan(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """The labels kept, in order, and the mapping from each emotion to its label."""
        labels = self.config.labels or self.emotions
        return tuple(labels), {e: e for e in self.emotions}

    def check(self) -> list[SettingError]:
        """Each kept label must be one the corpus has (after merges)."""
        _, mapping = self.label_plan()
        known = sorted(set(mapping.values()), key=list(mapping.values()).index)
        return [SettingError("labels", f"'{label}' is not a {self.name} label "
                                       f"({', '.join(known)})")
                for label in self.config.labels or () if label not in known]

    def files(self) -> list[Path]:
        """The corpus's WAVs, sorted; raises naming the path when the root is missing or
        holds none."""
        root = self.config.root.expanduser()
        if not root.is_dir():
            raise EmoplugError(f"dataset.root: {root} does not exist" if not root.exists()
                               else f"dataset.root: {root} is not a folder")
        folder = self.wav_folder(root)
        wavs = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wav"
                      and p.is_file() and not p.name.startswith("."))
        if not wavs:
            raise EmoplugError(f"dataset.root: {folder} holds no .wav files; is it the "
                               f"{self.corpus_name} folder (see docs/datasets.md)?")
        return wavs

    def coded_files(self) -> list[tuple[Path, CodedFile | BadName]]:
        """Each WAV with what its name says, or why it does not parse."""
        parsed: list[tuple[Path, CodedFile | BadName]] = []
        for path in self.files():
            try:
                parsed.append((path, self.parse(path)))
            except BadName as exc:
                parsed.append((path, exc))
        return parsed

    def describe(self) -> DatasetInfo:
        speakers = sorted({c.speaker for _, c in self.coded_files()
                           if isinstance(c, CodedFile) and c.excluded is None})
        return DatasetInfo(sessions=tuple(speakers), speakers=tuple(speakers))

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        kept, mapping = self.label_plan()
        root = self.config.root.expanduser()
        corpus = Corpus(self.name, kept, [], meta={"root": str(root)})
        found: Counter[str] = Counter()
        seen: set[str] = set()
        for path, coded in self.coded_files():
            if isinstance(coded, BadName):
                corpus.skip(BAD_NAME, f"{path.name}: {coded}")
                continue
            if coded.id in seen:
                corpus.skip("duplicate file name", str(path))
                continue
            seen.add(coded.id)
            if coded.published:
                found[coded.emotion] += 1
            intended = coded.emotion
            coded = self.relabel(coded)
            if coded.excluded:
                count_excluded(corpus, coded.excluded)
                continue
            label = mapping[coded.emotion]
            if label not in kept:
                count_excluded(corpus, f"label {coded.emotion} outside the label set")
                continue
            problem = audio_problem(path, corpus) if need_audio else None
            if problem:
                corpus.skip(problem, str(path))
                continue
            corpus.utterances.append(Utterance(
                id=coded.id, speaker=coded.speaker, session=coded.speaker, text=coded.text,
                audio=str(path), label=label, meta={**coded.meta, "emotion": intended}))
        corpus.meta["published_counts"] = self.published.check(found)
        return corpus
