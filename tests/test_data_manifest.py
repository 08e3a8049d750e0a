"""The manifest dataset: CSV and JSONL, renamed columns, relative audio, optional targets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from emoplug import EmoplugError
from emoplug.registry import get_registry

RENAMED = {"id": "utt", "text": "transcript", "audio": "wav", "label": "emotion",
           "valence": "v", "arousal": "a", "dominance": "d", "speaker": "spk",
           "session": "sess"}
ROWS = [
    {"utt": "u1", "wav": "audio/u1.wav", "transcript": "hello there", "emotion": "happy",
     "v": 4.0, "a": 3.5, "d": 3.0, "spk": "s1", "sess": "A", "improvised": "true"},
    {"utt": "u2", "wav": "audio/u2.wav", "transcript": "go away", "emotion": "angry",
     "v": 1.5, "a": 4.0, "d": 4.5, "spk": "s2", "sess": "A", "improvised": "false"},
    {"utt": "u3", "wav": "audio/missing.wav", "transcript": "so sad", "emotion": "sad",
     "v": 1.0, "a": 1.5, "d": 2.0, "spk": "s3", "sess": "B", "improvised": "true"},
    {"utt": "u4", "wav": "audio/u4.wav", "transcript": "", "emotion": "sad",
     "v": 2.0, "a": 2.0, "d": 2.0, "spk": "s3", "sess": "B", "improvised": "true"},
    {"utt": "u5", "wav": "audio/u5.wav", "transcript": "fine", "emotion": "neutral",
     "v": "", "a": "", "d": "", "spk": "s4", "sess": "B", "improvised": "true"},
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "audio").mkdir()
    for name in ("u1", "u2", "u4", "u5"):
        soundfile.write(str(tmp_path / "audio" / f"{name}.wav"),
                        np.zeros(800, dtype=np.float32), 16000, subtype="PCM_16")
    return tmp_path


def write_csv(path: Path, rows: list[dict]) -> Path:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(r[c]) for c in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, rows: list[dict], extra: str = "") -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n" + extra)
    return path


def build(path: Path, **settings):
    return get_registry().build("dataset", {"type": "manifest", "path": str(path), **settings})


@pytest.mark.parametrize("writer, name", [(write_csv, "list.csv"), (write_jsonl, "list.jsonl")])
def test_renamed_columns_and_relative_audio(folder: Path, writer, name: str):
    dataset = build(writer(folder / name, ROWS), columns=RENAMED)
    corpus = dataset.load(need_audio=True, cache_dir=folder / "cache")
    assert [u.id for u in corpus.utterances] == ["u1", "u2", "u5"]
    u1 = corpus.by_id()["u1"]
    assert (u1.speaker, u1.session, u1.text, u1.label) == ("s1", "A", "hello there", "happy")
    assert u1.audio == str(folder / "audio" / "u1.wav")
    assert u1.avd == (4.0, 3.5, 3.0)
    assert u1.meta == {"improvised": True} and corpus.by_id()["u2"].meta["improvised"] is False
    assert corpus.by_id()["u5"].avd is None  # all three dimensions empty
    assert corpus.labels == ("angry", "happy", "neutral")  # sorted labels present
    assert corpus.skipped == {"missing WAV": 1, "no text": 1}
    assert corpus.name == Path(name).stem
    assert dataset.describe().sessions == ("A", "B")
    assert dataset.describe().speakers == ("s1", "s2", "s3", "s4")


def test_text_only_ignores_audio_and_label_columns_are_optional(folder: Path):
    rows = [{k: v for k, v in r.items() if k in ("utt", "transcript", "spk", "sess")}
            for r in ROWS]
    corpus = build(write_csv(folder / "m.csv", rows), columns=RENAMED).load(
        need_audio=False, cache_dir=folder)
    assert [u.id for u in corpus.utterances] == ["u1", "u2", "u3", "u5"]
    assert corpus.labels == () and all(u.label is None and u.avd is None
                                       for u in corpus.utterances)
    with pytest.raises(EmoplugError, match="missing column"):
        build(folder / "m.csv", columns=RENAMED).load(need_audio=True, cache_dir=folder)


def test_configured_labels_and_partial_dimensions(folder: Path):
    rows = [dict(r, d="") for r in ROWS]
    corpus = build(write_jsonl(folder / "m.jsonl", rows, extra="{not json\n"), columns=RENAMED,
                   labels=["sad", "happy"]).load(need_audio=False, cache_dir=folder)
    assert corpus.labels == ("sad", "happy")
    assert [u.id for u in corpus.utterances] == ["u1", "u3"]
    assert corpus.meta["excluded"] == {"label angry outside the label set": 1,
                                       "label neutral outside the label set": 1}
    assert corpus.skipped == {"malformed line": 1, "no text": 1}
    v, a, d = corpus.by_id()["u1"].avd
    assert (v, a) == (4.0, 3.5) and math.isnan(d)


def test_default_column_names_and_bad_values(folder: Path):
    rows = [{"id": "x1", "text": "hi", "label": "neutral", "valence": "high",
             "speaker": "s", "session": "1"},
            {"id": "x2", "text": "yo", "label": "neutral", "valence": "3",
             "speaker": "", "session": "1"},
            {"id": "x3", "text": "ok", "label": "neutral", "valence": "3",
             "speaker": "s", "session": "1"}]
    corpus = build(write_csv(folder / "d.csv", rows)).load(need_audio=False, cache_dir=folder)
    assert [u.id for u in corpus.utterances] == ["x3"]
    assert corpus.by_id()["x3"].avd[0] == 3.0
    assert corpus.skipped == {"non-numeric valence/arousal/dominance": 1, "no speaker": 1}


def test_missing_file_and_columns_are_errors(folder: Path):
    with pytest.raises(EmoplugError, match="does not exist"):
        build(folder / "nope.csv").load(need_audio=False, cache_dir=folder)
    path = write_csv(folder / "bad.csv", [{"name": "a", "text": "b"}])
    with pytest.raises(EmoplugError, match="missing column\\(s\\) id, speaker, session"):
        build(path).load(need_audio=False, cache_dir=folder)
