"""The fold files reference benchmarks publish, read and written: EmoBox's and s3prl's.

An interchange format of the core, like ``result.json``: ``emoplug folds export`` writes it
(:func:`write_fold_files`), and the bundled ``fold_files`` protocol reads it through the
public API (``from emoplug import foldfiles``).

EmoBox (``data/<corpus>/``): ``fold_<k>/<corpus>_{train,test}_fold_<k>.jsonl``, one JSON object
a line (``key`` = ``<corpus>-<utterance id>``, ``emo`` = label code, ``wav``, ``length``, ...),
and ``label_map.json`` beside the folds (code -> label, e.g. ``exc`` -> ``Happy``).
s3prl (``meta_data/``): ``<fold>/{train,test}_meta_data.json``, each one JSON object
``{"labels": {code: index}, "meta_data": [{"path", "label", "speaker"}, ...]}``; the utterance
id is the WAV's file stem. Its ``speaker`` names the dialog's session and gender (an M
utterance of a ``Ses01F_`` dialog is ``Ses01F``), so it is never read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from emoplug.errors import EmoplugError
from emoplug.types import Corpus, Fold

PARTS = ("train", "test")
LABEL_MAP = "label_map.json"
_EMOBOX_FOLD = re.compile(r"^fold_(\d+)$")
_SESSION_FOLD = re.compile(r"^Ses0*(\d+)$")


@dataclass(frozen=True)
class FoldList:
    """One fold's lists: utterance id -> label code as the file gives it (None when absent),
    and the file each list was read from (``files``: part -> path)."""

    name: str
    train: dict[str, str | None]
    test: dict[str, str | None]
    files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class FoldFiles:
    """A folder of fold files: its folds in order and its label map (code -> label)."""

    folds: list[FoldList]
    label_map: dict[str, str]


def fold_folders(fmt: str, path: Path) -> list[Path]:
    """The fold folders under ``path`` in fold order, found from the listing alone."""
    if not path.is_dir():
        raise EmoplugError(f"fold_files: {path} is not a folder")
    if fmt == "emobox":
        numbered = sorted((int(m.group(1)), p) for p in path.iterdir()
                          if p.is_dir() and (m := _EMOBOX_FOLD.match(p.name)))
        folders = [p for _, p in numbered]
        expected = "fold_<k> folders"
    else:
        folders = sorted((p for p in path.iterdir() if (p / "test_meta_data.json").is_file()),
                         key=lambda p: [int(t) if t.isdigit() else t
                                        for t in re.split(r"(\d+)", p.name)])
        expected = "folders holding test_meta_data.json (Session1, ...)"
    if not folders:
        raise EmoplugError(f"fold_files: no {expected} in {path}")
    return folders


def read_fold_files(fmt: str, path: Path, corpus: str | None = None) -> FoldFiles:
    """Every fold's lists under ``path``; ``corpus`` is EmoBox's key prefix (default: the
    folder's name)."""
    folders = fold_folders(fmt, path)
    if fmt == "s3prl":
        folds = []
        for folder in folders:
            files = {part: folder / f"{part}_meta_data.json" for part in PARTS}
            folds.append(FoldList(folder.name, *(read_s3prl(files[part]) for part in PARTS),
                                  files))
        return FoldFiles(folds, {})
    name = corpus or path.name
    folds = []
    for folder in folders:
        k = folder.name.removeprefix("fold_")
        files = {part: folder / f"{name}_{part}_fold_{k}.jsonl" for part in PARTS}
        folds.append(FoldList(folder.name, *(read_emobox(files[part], f"{name}-")
                                             for part in PARTS), files))
    return FoldFiles(folds, read_label_map(path / LABEL_MAP))


def first_ids(items: Sequence[str], n: int = 3) -> str:
    """The first ``n`` items, then an ellipsis when there are more."""
    return ", ".join(items[:n]) + (", …" if len(items) > n else "")


def _refuse_repeats(path: Path, repeated: list[str]) -> None:
    """One error line when a list names an utterance more than once: the fold would hold a
    silently de-duplicated list where the benchmark meant something else."""
    if repeated:
        unique = sorted(set(repeated))
        raise EmoplugError(f"fold_files: {path}: {len(unique)} ids are listed more than once "
                           f"({first_ids(unique)})")


def read_emobox(path: Path, prefix: str) -> dict[str, str | None]:
    """``utterance id -> emo`` from one EmoBox JSON-lines file (keys are ``prefix + id``); an
    id listed twice is an error."""
    entries: dict[str, str | None] = {}
    repeated: list[str] = []
    for line_no, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EmoplugError(f"fold_files: {where}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise EmoplugError(f"fold_files: {where}: no 'key' (expected "
                               f"{{\"key\": \"{prefix}<id>\", ...}})")
        key = record["key"]
        if not key.startswith(prefix):
            raise EmoplugError(f"fold_files: {where}: key '{key}' does not start with "
                               f"'{prefix}' (set the protocol's corpus)")
        if key.removeprefix(prefix) in entries:
            repeated.append(key.removeprefix(prefix))
        entries[key.removeprefix(prefix)] = _code(record.get("emo"))
    _refuse_repeats(path, repeated)
    return entries


def read_s3prl(path: Path) -> dict[str, str | None]:
    """``utterance id (the WAV's stem) -> label`` from one s3prl meta-data file. A path
    listed twice, or two paths with one stem in different folders (two utterances the id
    cannot tell apart), is an error."""
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise EmoplugError(f"fold_files: {path}:{exc.lineno}: not JSON ({exc.msg})") from None
    items = data.get("meta_data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise EmoplugError(f"fold_files: {path}: no 'meta_data' list")
    entries: dict[str, str | None] = {}
    where: dict[str, str] = {}  # id -> the path that named it first
    repeated: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise EmoplugError(f"fold_files: {path}: meta_data[{index}] has no 'path'")
        stem = PurePosixPath(item["path"]).stem
        if stem in where and where[stem] != item["path"]:
            raise EmoplugError(f"fold_files: {path}: meta_data[{index}]: '{item['path']}' has "
                               f"the file name of '{where[stem]}' in another folder (s3prl's "
                               f"utterance id is the file's stem: {stem} is ambiguous)")
        if stem in where:
            repeated.append(stem)
        where.setdefault(stem, item["path"])
        entries[stem] = _code(item.get("label"))
    _refuse_repeats(path, repeated)
    return entries


def read_label_map(path: Path) -> dict[str, str]:
    """EmoBox's ``label_map.json`` (code -> label); empty when there is none."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise EmoplugError(f"fold_files: {path}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise EmoplugError(f"fold_files: {path}: expected an object mapping label codes to "
                           "labels")
    return data


def label_codes(labels: Sequence[str]) -> dict[str, str]:
    """Each label's code in the files: its first three letters, lower-cased (neutral -> neu,
    as IEMOCAP writes them), or the labels themselves when two would share a code."""
    codes = {label: label[:3].lower() for label in labels}
    if len(set(codes.values())) < len(codes):
        return {label: label for label in labels}
    return codes


def write_emobox(corpus: Corpus, folds: Sequence[Fold], output: Path) -> dict[str, Path]:
    """``output/<corpus>/fold_<k>/<corpus>_{train,test}_fold_<k>.jsonl`` and
    ``label_map.json``; train = a fold's train + dev. Returns fold name -> its folder."""
    root = output / corpus.name
    _fresh(root)
    codes = label_codes(corpus.labels)
    base = _audio_base(corpus)
    records = {u.id: {"key": f"{corpus.name}-{u.id}", "dataset": corpus.name,
                      "wav": _relative(u.audio, base), "type": "raw",
                      **_wav_fields(u.audio), "task": "category",
                      "emo": codes.get(u.label) if u.label else None}
               for u in corpus.utterances}
    written = {}
    for k, fold in enumerate(folds, start=1):
        folder = root / f"fold_{k}"
        folder.mkdir(parents=True)
        for part, ids in _parts(fold):
            (folder / f"{corpus.name}_{part}_fold_{k}.jsonl").write_text(
                "".join(json.dumps(records[i]) + "\n" for i in ids), encoding="utf-8")
        written[fold.name] = folder
    _write_json(root / LABEL_MAP, {code: label for label, code in codes.items()})
    return written


def write_s3prl(corpus: Corpus, folds: Sequence[Fold], output: Path) -> dict[str, Path]:
    """``output/<fold>/{train,test}_meta_data.json``; a fold named after a session (``Ses01``)
    goes to ``Session1``, any other to its own name; train = a fold's train + dev. Returns
    fold name -> its folder."""
    _fresh(output)
    codes = label_codes(corpus.labels)
    labels = {codes[label]: index for index, label in enumerate(corpus.labels)}
    base = _audio_base(corpus)
    paths = {u.id: _relative(u.audio, base) or f"{u.id}.wav" for u in corpus.utterances}
    misnamed = sorted(i for i, p in paths.items() if PurePosixPath(p).stem != i)
    if misnamed:
        raise EmoplugError(
            f"fold_files: s3prl names an utterance by its WAV's file name, but {len(misnamed)} "
            f"audio files are not named after their utterance id ({', '.join(misnamed[:3])}); "
            "use --format emobox")
    by_id = corpus.by_id()
    written = {}
    for fold in folds:
        session = _SESSION_FOLD.match(fold.name)
        folder = output / (f"Session{int(session.group(1))}" if session else fold.name)
        folder.mkdir(parents=True)
        for part, ids in _parts(fold):
            items: list[dict[str, Any]] = [
                {"path": paths[i], "label": codes.get(by_id[i].label) if by_id[i].label else None,
                 "speaker": by_id[i].speaker} for i in ids]
            _write_json(folder / f"{part}_meta_data.json", {"labels": labels, "meta_data": items})
        written[fold.name] = folder
    return written


def _parts(fold: Fold) -> tuple[tuple[str, list[str]], ...]:
    """The two lists the benchmarks keep: train (emoplug's train + dev) and test, sorted."""
    return ("train", sorted((*fold.train, *fold.dev))), ("test", sorted(fold.test))


def _audio_base(corpus: Corpus) -> Path | None:
    """The folder audio paths are written relative to: the dataset's ``root`` when it records
    one (IEMOCAP: ``Session1/sentences/wav/...``), else the folder all audio files share."""
    if corpus.meta.get("root"):
        return Path(corpus.meta["root"])
    folders = [os.path.dirname(os.path.abspath(u.audio)) for u in corpus.utterances if u.audio]
    return Path(os.path.commonpath(folders)) if folders else None


def _relative(audio: str | None, base: Path | None) -> str | None:
    if audio is None:
        return None
    try:
        return Path(audio).relative_to(base).as_posix() if base else Path(audio).as_posix()
    except ValueError:  # outside the base folder: keep the path as it is
        return Path(audio).as_posix()


def _wav_fields(audio: str | None) -> dict[str, Any]:
    """EmoBox's sample_rate, num_frame, length and channel from the WAV header (null when
    the file is missing or unreadable)."""
    import soundfile

    try:
        info = soundfile.info(audio) if audio else None
    except Exception:  # soundfile raises several types for missing or foreign files
        info = None
    if info is None or not info.samplerate:
        return {"sample_rate": None, "num_frame": None, "length": None, "channel": None}
    return {"sample_rate": info.samplerate, "num_frame": float(info.frames),
            "length": info.frames / info.samplerate, "channel": info.channels}


def _fresh(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise EmoplugError(f"fold_files: {folder} already holds files; write to a new folder")
    folder.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _text(path: Path) -> str:
    if not path.is_file():
        raise EmoplugError(f"fold_files: {path}: no such file")
    return path.read_text(encoding="utf-8")


def _code(value: Any) -> str | None:
    return None if value is None else str(value)


def write_fold_files(fmt: str, corpus: Corpus, folds: Sequence[Fold], output: Path
                     ) -> dict[str, Path]:
    """Write ``folds`` as ``fmt`` (``emobox``, ``s3prl``) fold files under ``output`` (train
    lists = train + dev); returns each fold's folder by fold name."""
    writers = {"emobox": write_emobox, "s3prl": write_s3prl}
    if fmt not in writers:
        raise EmoplugError(f"fold files: unknown format {fmt!r} (emobox or s3prl)")
    check_new_or_empty(output)
    return writers[fmt](corpus, folds, output)


def check_new_or_empty(output: Path) -> None:
    """Fold files go to a new or empty folder (``--output``), whatever the format."""
    if output.is_dir() and any(output.iterdir()):
        raise EmoplugError(f"--output: {output} already holds files; write to a new or empty "
                           "folder")
