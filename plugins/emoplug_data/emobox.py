"""The ``emobox`` dataset: any corpus EmoBox prepares, read from its data files.

EmoBox (github.com/emo-box/EmoBox) publishes, per corpus, ``data/<corpus>/<corpus>.jsonl``
(one JSON object a line: ``key`` = ``<corpus>-<utterance id>``, ``wav`` = a path under
``downloads/<corpus>/``, ``emo`` = a label code, ``type``, ``sample_rate``, ``length``,
``channel``, ...), ``label_map.json`` (code -> label), ``data.seg.wrd.stm`` (one line a
segment: key, channel, **speaker**, start, end, tags, label) and its folds
(``fold_<k>/``, read by the ``fold_files`` protocol). The user's audio is found by
rewriting each ``wav`` path's prefix (``downloads/<corpus>``) to ``wav_root``.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from pydantic import Field

from emoplug import (
    ComponentConfig,
    Corpus,
    Dataset,
    DatasetInfo,
    EmoplugError,
    SettingError,
    Utterance,
    foldfiles,
)
from emoplug_data.common import audio_problem, count_excluded, note
from emoplug_data.filecodes import PublishedCounts

STM = "data.seg.wrd.stm"
UNKNOWN_SPEAKER = "unknown"
#: EmoBox's README (the Datasets table, column #Utts), by the corpus's folder under data/
PUBLISHED_UTTERANCES: dict[str, int] = {
    "aesdd": 604, "ased": 2474, "asvpesd": 13964, "cafe": 936, "casia": 1200,
    "cremad": 7442, "emns": 1181, "emodb": 535, "emovdb": 6887, "emovo": 588,
    "emozionalmente": 6902, "enterface": 1263, "esd": 35000, "iemocap": 5531,
    "jlcorpus": 2400, "m3ed": 24437, "mead": 31729, "meld": 13706, "mer2023": 5030,
    "mesd": 862, "msppodcast": 73042, "oreau": 434, "pavoque": 7334, "polish": 450,
    "ravdess": 1440, "resd": 1396, "savee": 480, "shemo": 2838, "subesco": 7000,
    "tess": 2800, "turevdb": 1735, "urdu": 400,
}


class EmoboxConfig(ComponentConfig):
    path: Path = Field(description="EmoBox's data/<corpus> folder (holding <corpus>.jsonl)")
    corpus: str | None = Field(
        None, description="the corpus's name in EmoBox: the file <corpus>.jsonl and the key "
                          "prefix ('iemocap' in 'iemocap-Ses01F_impro04_F000'); default: "
                          "the folder's name")
    wav_root: Path | None = Field(
        None, description="where your copy of the corpus is: replaces wav_prefix in each "
                          "wav path; default: the EmoBox checkout (data/<corpus>/../..), "
                          "where EmoBox expects downloads/<corpus>/")
    wav_prefix: str | None = Field(
        None, description="the start of the wav paths that wav_root replaces; default: "
                          "downloads/<corpus>")
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: every label of "
                          "label_map.json (or every code when there is none)")


class EmoboxDataset(Dataset):
    """A corpus as EmoBox prepares it: its JSON-lines metadata, label map and speakers."""

    name: ClassVar[str] = "emobox"
    Config: ClassVar[type[EmoboxConfig]] = EmoboxConfig
    #: ``path`` names the corpus (its folder is the default corpus name), so it stays in
    #: job ids; where the audio lives does not
    location_fields: ClassVar[tuple[str, ...]] = ("wav_root",)

    def check(self) -> list[SettingError]:
        """Each kept label must be one of label_map.json's (when the file is there)."""
        path = self.config.path.expanduser() / foldfiles.LABEL_MAP
        if not self.config.labels or not path.is_file():
            return []
        known = list(dict.fromkeys(foldfiles.read_label_map(path).values()))
        return [SettingError("labels", f"'{label}' is not a label of {path} "
                                       f"({', '.join(known)})")
                for label in self.config.labels if label not in known]

    def folder(self) -> Path:
        folder = self.config.path.expanduser()
        if not folder.is_dir():
            raise EmoplugError(f"dataset.path: {folder} does not exist" if not folder.exists()
                               else f"dataset.path: {folder} is not a folder")
        if not (folder / f"{self.corpus_name()}.jsonl").is_file():
            raise EmoplugError(f"dataset.path: {folder} has no {self.corpus_name()}.jsonl; is "
                               "it EmoBox's data/<corpus> folder (see docs/datasets.md)? "
                               "dataset.corpus names the file")
        return folder

    def corpus_name(self) -> str:
        return self.config.corpus or self.config.path.expanduser().name

    @cached_property
    def records(self) -> list[tuple[str, dict[str, Any]]]:
        """``(file:line, record)`` of ``<corpus>.jsonl``; a malformed line (not JSON, no key,
        a key without the corpus prefix, no wav or emo, a key listed twice) is one error."""
        name = f"{self.corpus_name()}.jsonl"
        path = self.folder() / name
        prefix = f"{self.corpus_name()}-"
        records, seen = [], set()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{name}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EmoplugError(f"dataset.path: {where}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                raise EmoplugError(f"dataset.path: {where}: no 'key'")
            if not record["key"].startswith(prefix):
                raise EmoplugError(f"dataset.path: {where}: key '{record['key']}' does not "
                                   f"start with '{prefix}' (set dataset.corpus)")
            for field in ("wav", "emo"):
                if not isinstance(record.get(field), str) or not record[field]:
                    raise EmoplugError(f"dataset.path: {where}: no '{field}'")
            if record["key"] in seen:
                raise EmoplugError(f"dataset.path: {where}: key '{record['key']}' is listed "
                                   "twice")
            seen.add(record["key"])
            records.append((where, record))
        return records

    @cached_property
    def speakers(self) -> dict[str, str]:
        """key -> speaker from ``data.seg.wrd.stm`` (empty when the file is missing)."""
        path = self.folder() / STM
        if not path.is_file():
            return {}
        speakers = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 3:
                raise EmoplugError(f"dataset.path: {STM}:{n}: expected key, channel, speaker, "
                                   "...")
            speakers[fields[0]] = fields[2]
        return speakers

    def speaker(self, key: str) -> str:
        return self.speakers.get(key, UNKNOWN_SPEAKER)

    def describe(self) -> DatasetInfo:
        speakers = sorted({self.speaker(r["key"]) for _, r in self.records})
        return DatasetInfo(sessions=tuple(speakers), speakers=tuple(speakers))

    def audio_path(self, wav: str, where: str) -> Path:
        """The user's file for a record's ``wav``: its ``wav_prefix`` replaced by
        ``wav_root``."""
        folder = self.folder()
        if self.config.wav_root is None:
            return folder.parent.parent / wav
        prefix = PurePosixPath(self.config.wav_prefix or f"downloads/{self.corpus_name()}")
        written = PurePosixPath(wav)
        try:
            rest = written.relative_to(prefix)
        except ValueError:
            raise EmoplugError(f"dataset.path: {where}: wav '{wav}' does not start with "
                               f"'{prefix}' (set dataset.wav_prefix)") from None
        return self.config.wav_root.expanduser() / rest

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        folder = self.folder()
        label_map = foldfiles.read_label_map(folder / foldfiles.LABEL_MAP)
        prefix = f"{self.corpus_name()}-"
        all_labels = tuple(dict.fromkeys(label_map.values())) if label_map else tuple(
            sorted({r["emo"] for _, r in self.records}))
        labels = tuple(self.config.labels or all_labels)
        corpus = Corpus(self.corpus_name(), labels, [], meta={"path": str(folder)})
        if not self.speakers:
            note(corpus, f"{folder.name} has no {STM}: every utterance's speaker is "
                         f"'{UNKNOWN_SPEAKER}', so speaker-based protocols cannot split it")
        unknown = sum(r["key"] not in self.speakers for _, r in self.records)
        if self.speakers and unknown:
            note(corpus, f"{unknown} utterances of {folder.name} are not in {STM}: their "
                         f"speaker is '{UNKNOWN_SPEAKER}'")
        for where, record in self.records:
            utterance = self.utterance(where, record, prefix, label_map, labels, need_audio,
                                       corpus)
            if utterance is not None:
                corpus.utterances.append(utterance)
        published = PUBLISHED_UTTERANCES.get(self.corpus_name())
        if published is not None:
            corpus.meta["published_counts"] = PublishedCounts(
                source="EmoBox README (Datasets table, #Utts)", unit="corpus",
                per_label={self.corpus_name(): published},
            ).check(Counter({self.corpus_name(): len(self.records)}))
        return corpus

    def utterance(self, where: str, record: dict[str, Any], prefix: str,
                  label_map: dict[str, str], labels: tuple[str, ...], need_audio: bool,
                  corpus: Corpus) -> Utterance | None:
        """One record as an Utterance, or None (excluded or skipped, counted on ``corpus``)."""
        if record.get("type", "raw") != "raw":
            corpus.skip(f"type {record['type']} (features, not audio)", where)
            return None
        if "start_time" in record or "end_time" in record:
            corpus.skip("a segment of a longer WAV (start_time/end_time): not supported",
                        where)
            return None
        if label_map and record["emo"] not in label_map:
            raise EmoplugError(f"dataset.path: {where}: emo '{record['emo']}' is not in "
                               f"{foldfiles.LABEL_MAP} ({', '.join(label_map)})")
        label = label_map.get(record["emo"], record["emo"])
        if label not in labels:
            count_excluded(corpus, f"label {label} outside the label set")
            return None
        audio = self.audio_path(record["wav"], where)
        problem = audio_problem(audio, corpus) if need_audio else None
        if problem:
            corpus.skip(problem, str(audio))
            return None
        speaker = self.speaker(record["key"])
        meta = {k: record[k] for k in ("length", "sample_rate", "channel") if k in record}
        return Utterance(id=record["key"].removeprefix(prefix), speaker=speaker,
                         session=speaker, audio=str(audio), label=label,
                         meta={**meta, "code": record["emo"]})
