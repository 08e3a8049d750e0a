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
    with pytest.raises(EmoplugError, match="has no column 'wav' \\(audio\\) \\(a cell of "
                       "the recipe uses audio\\)"):
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
    with pytest.raises(EmoplugError, match="^dataset.path: .*nope.csv does not exist$"):
        build(folder / "nope.csv").load(need_audio=False, cache_dir=folder)
    path = write_csv(folder / "bad.csv", [{"name": "a", "text": "b"}])
    with pytest.raises(EmoplugError, match="has no column 'id' \\(id\\), 'speaker' "):
        build(path).load(need_audio=False, cache_dir=folder)


def test_unknown_columns_name_those_found_and_the_mapping(folder: Path):
    """Today: "missing column(s) id, text or audio, audio" (the audio column twice)."""
    path = write_csv(folder / "m.csv", [{"utt": "a", "spk": "s1", "words": "hi"}])
    with pytest.raises(EmoplugError) as err:
        build(path).load(need_audio=True, cache_dir=folder)
    assert str(err.value) == (
        "dataset.path: m.csv has no column 'id' (id), 'speaker' (speaker), 'audio' (audio) "
        "(a cell of the recipe uses audio); its columns: spk, utt, words; dataset.columns "
        "maps each field to yours, e.g. columns: {id: <column>, speaker: spk, audio: <column>}")
    path = write_csv(folder / "n.csv", [{"utt_id": "a", "speaker_name": "s1", "text": "hi"}])
    with pytest.raises(EmoplugError, match="e.g. columns: {id: utt_id, speaker: speaker_name}$"):
        build(path).load(need_audio=False, cache_dir=folder)
    path = folder / "m.csv"
    with pytest.raises(EmoplugError, match="'text' or 'audio' \\(text or audio\\); its "
                                           "columns: spk, utt, words"):
        build(path, columns={"id": "utt", "speaker": "spk"}).load(need_audio=False,
                                                                 cache_dir=folder)


def test_session_is_optional_and_the_speaker_serves(folder: Path):
    """Today: a manifest without a session column is refused (missing column session)."""
    rows = [{"id": f"x{i}", "text": "hi", "speaker": f"s{i % 2}"} for i in range(4)]
    dataset = build(write_csv(folder / "m.csv", rows))
    corpus = dataset.load(need_audio=False, cache_dir=folder)
    assert [(u.speaker, u.session) for u in corpus.utterances] == [
        ("s0", "s0"), ("s1", "s1"), ("s0", "s0"), ("s1", "s1")]
    assert dataset.describe().sessions == ("s0", "s1")


def test_a_label_differing_only_in_case_is_skipped_and_counted(folder: Path):
    """Today: 'Angry' under labels [angry, happy] is excluded like any other label, unwarned."""
    rows = [{"id": "a", "text": "x", "label": "Angry", "speaker": "s"},
            {"id": "b", "text": "y", "label": "angry", "speaker": "s"},
            {"id": "c", "text": "z", "label": "happy ", "speaker": "s"},
            {"id": "d", "text": "w", "label": "sad", "speaker": "s"}]
    corpus = build(write_jsonl(folder / "m.jsonl", rows), labels=["angry", "happy"]).load(
        need_audio=False, cache_dir=folder)
    assert [u.id for u in corpus.utterances] == ["b"]
    assert corpus.skipped == {"label not in the label set, but for case or spaces (angry)": 1,
                              "label not in the label set, but for case or spaces (happy)": 1}
    assert corpus.skipped_examples[
        "label not in the label set, but for case or spaces (angry)"] == ["a: 'Angry'"]
    assert corpus.meta["excluded"] == {"label sad outside the label set": 1}


def test_header_only_or_unusable_rows_are_described_as_such(folder: Path):
    """Today: describe() lists no sessions, so the plan has 0 jobs and 'validate' passes."""
    (folder / "h.csv").write_text("id,speaker,text\n")
    with pytest.raises(EmoplugError, match="^dataset.path: h.csv has no rows$"):
        build(folder / "h.csv").describe()
    path = write_csv(folder / "n.csv", [{"id": "a", "speaker": "", "text": "t"}])
    with pytest.raises(EmoplugError, match="n.csv has no row with both id and speaker"):
        build(path).describe()
