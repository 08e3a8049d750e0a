"""The ``manifest`` dataset: any corpus listed in a CSV or JSONL file, one utterance a row.

Columns (names configurable with ``columns``): ``id`` and ``speaker`` (required), ``session``
(optional: a row without one is its speaker's session), ``text`` and/or ``audio``, and the
optional targets ``label``, ``valence``, ``arousal``, ``dominance``. Relative audio paths are
resolved against the manifest's folder.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from emoplug import (
    AVD_NAMES,
    ComponentConfig,
    Corpus,
    Dataset,
    DatasetInfo,
    EmoplugError,
    Utterance,
)
from emoplug_data.common import audio_problem, count_excluded, note
from emoplug_data.tables import DELIMITER_NAMES, csv_rows, read_utf8, sniff_delimiter

REQUIRED = ("id", "speaker")
#: label values read as "no label" (how spreadsheets and pandas write an empty cell)
MISSING_LABELS = frozenset({"nan", "none", "null", "n/a", "na"})


class ManifestColumns(ComponentConfig):
    """The manifest's column name for each field."""

    id: str = "id"
    audio: str = "audio"
    text: str = "text"
    label: str = "label"
    valence: str = "valence"
    arousal: str = "arousal"
    dominance: str = "dominance"
    speaker: str = "speaker"
    session: str = "session"


class ManifestConfig(ComponentConfig):
    path: Path = Field(description="the CSV or JSONL manifest")
    format: Literal["auto", "csv", "jsonl"] = Field(
        "auto", description="auto: by suffix (.jsonl/.ndjson = JSONL, anything else CSV)")
    columns: ManifestColumns = ManifestColumns()
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: the sorted labels present")
    avd_scale: tuple[float, float] = (1.0, 5.0)
    name: str | None = Field(None, description="corpus name; default: the file's stem")


class ManifestDataset(Dataset):
    """A corpus listed in a CSV or JSONL manifest."""

    name: ClassVar[str] = "manifest"
    Config: ClassVar[type[ManifestConfig]] = ManifestConfig

    def describe(self) -> DatasetInfo:
        rows = [row for _, row in self._rows(skip=None)]
        usable = [row for row in rows
                  if all(_present(row.get(getattr(self.config.columns, f))) for f in REQUIRED)]
        if not usable:
            self._check_columns(rows, need_audio=False)
            names = " and ".join(getattr(self.config.columns, f) for f in REQUIRED)
            raise EmoplugError(f"dataset.path: {self._path().name} has no row with both "
                               f"{names} ({len(rows)} rows)")
        sessions = {self._session(row) for row in usable}
        speakers = {str(row[self.config.columns.speaker]) for row in usable}
        return DatasetInfo(sessions=tuple(sorted(sessions)), speakers=tuple(sorted(speakers)))

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        path = self._path()
        corpus = Corpus(self.config.name or path.stem, (), [], avd_scale=self.config.avd_scale,
                        meta={"path": str(path)})
        located = list(self._rows(skip=corpus))
        header = self._check_columns([row for _, row in located], need_audio)
        blank = sum(not _present(row.get(self.config.columns.session)) for _, row in located)
        if self.config.columns.session in header and blank:
            note(corpus, f"{blank} rows of {path.name} have no {self.config.columns.session}: "
                         "each is put in a session named after its speaker, beside that "
                         "speaker's other sessions (the folds' leakage audit shows it)")
        for where, row in located:
            utterance = self._utterance(row, where, header, path.parent, need_audio, corpus)
            if utterance is not None:
                corpus.utterances.append(utterance)
        present = sorted({u.label for u in corpus.utterances if u.label is not None})
        corpus.labels = self.config.labels or tuple(present)
        if self.config.labels is not None:
            folded = {_fold(label): label for label in corpus.labels}
            kept = []
            for u in corpus.utterances:
                if u.label is None or u.label in corpus.labels:
                    kept.append(u)
                elif _fold(u.label) in folded:  # "Angry" for "angry": a mistake, warned
                    corpus.skip(f"label not in the label set, but for case or spaces "
                                f"({folded[_fold(u.label)]})", f"{u.id}: {u.label!r}")
                else:
                    count_excluded(corpus, f"label {u.label} outside the label set")
            corpus.utterances = kept
        return corpus

    def _path(self) -> Path:
        path = self.config.path.expanduser()
        if not path.is_file():
            raise EmoplugError(f"dataset.path: {path} does not exist"
                               if not path.exists() else f"dataset.path: {path} is not a file")
        return path

    def _check_columns(self, rows: list[dict[str, Any]], need_audio: bool) -> set[str]:
        """The manifest's column names; raises naming the missing ones, the columns found,
        and the ``columns`` mapping that renames them."""
        if not rows:
            raise EmoplugError(f"dataset.path: {self._path().name} has no rows")
        header = set().union(*(row.keys() for row in rows))
        cols = self.config.columns
        missing = [f for f in REQUIRED if getattr(cols, f) not in header]
        if need_audio and cols.audio not in header:
            missing.append("audio")
        elif cols.text not in header and cols.audio not in header:
            missing.append("text or audio")
        if not missing:
            return header
        wanted = ", ".join(f"'{getattr(cols, f)}' ({f})" if f != "text or audio" else
                           f"'{cols.text}' or '{cols.audio}' (text or audio)" for f in missing)
        why = " (a cell of the recipe uses audio)" if "audio" in missing else ""
        known = {getattr(cols, f) for f in ManifestColumns.model_fields}
        unknown = [c for c in sorted(header) if c not in known]
        example = ", ".join(f"{f}: {_likely_column(f, unknown)}"
                            for f in (m.split()[0] for m in missing))
        raise EmoplugError(f"dataset.path: {self._path().name} has no column {wanted}{why}; "
                           f"its columns: {', '.join(sorted(header))}; dataset.columns "
                           f"maps each field to yours, e.g. columns: {{{example}}}")

    def _session(self, row: dict[str, Any]) -> str:
        """A row's session, its speaker when it has none."""
        cols = self.config.columns
        value = row.get(cols.session)
        return str(value) if _present(value) else str(row[cols.speaker])

    def _rows(self, skip: Corpus | None) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(location, row)`` for every row; malformed lines are counted on ``skip``."""
        path = self._path()
        fmt = self.config.format
        if fmt == "auto":
            fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv"
        text = read_utf8(path)
        if fmt == "csv":
            delimiter = sniff_delimiter(text)
            if delimiter != "," and skip is not None:
                note(skip, f"{path.name} is {DELIMITER_NAMES[delimiter]}-separated, not "
                           "comma-separated; read as such")
            for n, row in csv_rows(text, path.name, delimiter):
                yield f"{path.name}:{n}", row
            return
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                yield f"{path.name}:{n}", row
            elif skip is not None:
                skip.skip("malformed line", f"{path.name}:{n}")

    def _utterance(self, row: dict[str, Any], where: str, header: set[str], folder: Path,
                   need_audio: bool, corpus: Corpus) -> Utterance | None:
        """One row as an Utterance, or None (counted on ``corpus``) when it cannot be used."""
        cols = self.config.columns
        for field in REQUIRED:
            if not _present(row.get(getattr(cols, field))):
                corpus.skip(f"no {field}", where)
                return None
        utt_id = str(row[cols.id])
        text = row.get(cols.text)
        if cols.text in header and not _present(text):
            corpus.skip("no text", utt_id)
            return None
        label = row.get(cols.label)
        if _present(label) and str(label).strip().lower() in MISSING_LABELS:
            label = None
        if cols.label in header and not _present(label):
            corpus.skip("no label", utt_id)
            return None
        try:
            avd = _avd(row, cols)
        except ValueError:
            corpus.skip("non-numeric valence/arousal/dominance", utt_id)
            return None
        audio = None
        if _present(row.get(cols.audio)):
            audio_path = Path(str(row[cols.audio])).expanduser()
            audio_path = audio_path if audio_path.is_absolute() else folder / audio_path
            problem = audio_problem(audio_path, corpus) if need_audio else None
            if problem:
                corpus.skip(problem, str(audio_path))
                return None
            audio = str(audio_path)
        elif need_audio:
            corpus.skip("no audio", utt_id)
            return None
        known = {getattr(cols, f) for f in ManifestColumns.model_fields}
        meta = {k: v for k, v in row.items() if k not in known}
        if "improvised" in meta:
            meta["improvised"] = str(meta["improvised"]).strip().lower() in ("1", "true", "yes")
        return Utterance(
            id=utt_id, speaker=str(row[cols.speaker]), session=self._session(row),
            text=str(text) if _present(text) else None, audio=audio,
            label=str(label) if _present(label) else None, avd=avd, meta=meta)


def _likely_column(field: str, columns: list[str]) -> str:
    """The column that probably holds ``field`` (``utt_id`` or ``spk`` for ``id`` or
    ``speaker``): one containing the field's name, else a close spelling; else a
    placeholder."""
    containing = [c for c in columns if field in c.lower()]
    close = difflib.get_close_matches(field, columns, 1, 0.6)
    return (containing or close or ["<column>"])[0]


def _fold(label: str) -> str:
    """A label compared without case or spaces."""
    return "".join(label.split()).casefold()


def _present(value: Any) -> bool:
    return value is not None and str(value).strip() != ""


def _avd(row: dict[str, Any], cols: ManifestColumns) -> tuple[float, float, float] | None:
    """The row's (valence, arousal, dominance), NaN where absent; None when all are absent."""
    values = [float(row[getattr(cols, d)]) if _present(row.get(getattr(cols, d))) else math.nan
              for d in AVD_NAMES]
    if all(math.isnan(v) for v in values):
        return None
    return (values[0], values[1], values[2])
