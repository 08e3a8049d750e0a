"""The emobox dataset on a synthetic EmoBox data folder in its published layout, with its folds
read by the fold_files protocol."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from emoplug import EmoplugError
from emoplug.cli import main
from emoplug.registry import get_registry
from emoplug_data.emobox import PUBLISHED_UTTERANCES

#: (utterance id, emo code, speaker in the STM file); two sessions, five codes
UTTERANCES = [
    ("Ses01F_impro01_F000", "neu", "Ses01F"), ("Ses01F_impro01_F001", "hap", "Ses01F"),
    ("Ses01F_impro01_M000", "ang", "Ses01F"), ("Ses01F_impro01_M001", "sad", "Ses01F"),
    ("Ses01F_impro01_F002", "exc", "Ses01F"), ("Ses01F_impro01_F003", "neu", "Ses01F"),
    ("Ses02M_impro01_F000", "neu", "Ses02M"), ("Ses02M_impro01_F001", "hap", "Ses02M"),
    ("Ses02M_impro01_M000", "ang", "Ses02M"), ("Ses02M_impro01_M001", "sad", "Ses02M"),
    ("Ses02M_impro01_M002", "exc", "Ses02M"), ("Ses02M_impro01_M003", "ang", "Ses02M"),
]
LABEL_MAP = {"neu": "Neutral", "hap": "Happy", "exc": "Happy", "ang": "Angry", "sad": "Sad"}


def wav_of(utt: str) -> str:
    session = int(utt[3:5])
    return f"downloads/iemocap/Session{session}/sentences/wav/{utt[:-5]}/{utt}.wav"


def record(utt: str, emo: str, **extra) -> dict:
    return {"key": f"iemocap-{utt}", "dataset": "iemocap", "wav": wav_of(utt), "type": "raw",
            "sample_rate": 16000, "num_frame": 1600.0, "task": "category", "length": 0.1,
            "emo": emo, "channel": 1, **extra}


def write_lines(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def emobox_tree(root: Path, wav_root: Path) -> Path:
    """EmoBox/data/iemocap (jsonl, label map, STM speakers, two folds by session) and the
    corpus's WAVs under ``wav_root`` laid out like the wav paths after downloads/iemocap/."""
    folder = root / "data" / "iemocap"
    records = [record(u, emo) for u, emo, _ in UTTERANCES]
    write_lines(folder / "iemocap.jsonl", records)
    (folder / "label_map.json").write_text(json.dumps(LABEL_MAP, indent=4))
    (folder / "data.seg.wrd.stm").write_text("".join(
        f"iemocap-{u} 1 {spk} 0 0.1 <id=iemocap-{u},lang=en,spk={spk},emotion={emo}> {emo}\n"
        for u, emo, spk in UTTERANCES))
    for k, session in ((1, "Ses01"), (2, "Ses02")):
        test = [r for r in records if r["key"].startswith(f"iemocap-{session}")]
        train = [r for r in records if r not in test]
        write_lines(folder / f"fold_{k}" / f"iemocap_test_fold_{k}.jsonl", test)
        write_lines(folder / f"fold_{k}" / f"iemocap_train_fold_{k}.jsonl", train)
    for utt, _, _ in UTTERANCES:
        path = wav_root / wav_of(utt).removeprefix("downloads/iemocap/")
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    return folder


def load(folder: Path, tmp_path: Path, need_audio: bool = True, **settings):
    dataset = get_registry().build("dataset", {"type": "emobox", "path": str(folder),
                                               **settings})
    return dataset.load(need_audio=need_audio, cache_dir=tmp_path / "cache")


def test_emobox_reads_keys_labels_speakers_and_rewrites_wav_paths(tmp_path):
    folder = emobox_tree(tmp_path / "EmoBox", tmp_path / "IEMOCAP_full_release")
    corpus = load(folder, tmp_path, wav_root=str(tmp_path / "IEMOCAP_full_release"))
    assert corpus.name == "iemocap" and corpus.labels == ("Neutral", "Happy", "Angry", "Sad")
    assert len(corpus.utterances) == 12
    excited = corpus.by_id()["Ses02M_impro01_M002"]
    assert (excited.label, excited.speaker, excited.session, excited.text) == (
        "Happy", "Ses02M", "Ses02M", None)
    assert excited.meta == {"length": 0.1, "sample_rate": 16000, "channel": 1, "code": "exc"}
    assert excited.audio == str(tmp_path / "IEMOCAP_full_release" / "Session2" / "sentences"
                                / "wav" / "Ses02M_impro01" / "Ses02M_impro01_M002.wav")
    check = corpus.meta["published_counts"]
    assert (check["unit"], check["per_label"]) == (
        "corpus", {"iemocap": {"found": 12, "published": 5531}})
    three = load(folder, tmp_path, need_audio=False, labels=["Angry", "Sad", "Neutral"])
    assert three.meta["excluded"] == {"label Happy outside the label set": 4}


def test_emobox_finds_audio_in_the_checkout_by_default(tmp_path):
    folder = emobox_tree(tmp_path / "EmoBox", tmp_path / "EmoBox" / "downloads" / "iemocap")
    corpus = load(folder, tmp_path)
    assert corpus.skipped == {}
    assert corpus.utterances[0].audio.startswith(str(tmp_path / "EmoBox" / "downloads"))


def test_emobox_folds_through_the_fold_files_protocol(tmp_path):
    folder = emobox_tree(tmp_path / "EmoBox", tmp_path / "wavs")
    corpus = load(folder, tmp_path, wav_root=str(tmp_path / "wavs"))
    protocol = get_registry().build("protocol", {"type": "fold_files", "format": "emobox",
                                                 "path": str(folder)})
    folds = protocol.folds(corpus)
    assert [f.name for f in folds] == ["fold_1", "fold_2"]
    assert all(i.startswith("Ses01") for i in folds[0].test) and len(folds[0].test) == 6
    assert set(folds[1].train) | set(folds[1].dev) == {u for u, _, _ in UTTERANCES[:6]}


def test_emobox_without_speaker_file_says_so(tmp_path):
    folder = emobox_tree(tmp_path / "EmoBox", tmp_path / "wavs")
    (folder / "data.seg.wrd.stm").unlink()
    corpus = load(folder, tmp_path, need_audio=False)
    assert {u.speaker for u in corpus.utterances} == {"unknown"}
    assert any("has no data.seg.wrd.stm" in w for w in corpus.meta["warnings"])


def test_emobox_skips_segments_and_feature_records(tmp_path):
    folder = emobox_tree(tmp_path / "EmoBox", tmp_path / "wavs")
    records = [record(u, emo) for u, emo, _ in UTTERANCES]
    records[0]["start_time"], records[0]["end_time"] = 0.0, 0.05
    records[1]["type"] = "feature"
    write_lines(folder / "iemocap.jsonl", records)
    corpus = load(folder, tmp_path, need_audio=False)
    assert corpus.skipped == {
        "a segment of a longer WAV (start_time/end_time): not supported": 1,
        "type feature (features, not audio)": 1}
    assert corpus.skipped_examples["type feature (features, not audio)"] == ["iemocap.jsonl:2"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda lines: lines.insert(2, "{not json"), r"iemocap.jsonl:3: not JSON"),
    (lambda lines: lines.__setitem__(0, json.dumps({"wav": "a.wav"})),
     r"iemocap.jsonl:1: no 'key'"),
    (lambda lines: lines.__setitem__(1, lines[1].replace("iemocap-", "crema-")),
     r"iemocap.jsonl:2: key 'crema-Ses01F_impro01_F001' does not start with 'iemocap-'"),
    (lambda lines: lines.append(lines[0]), r"iemocap.jsonl:13: key 'iemocap-Ses01F_impro01_F000' "
                                           r"is listed twice"),
    (lambda lines: lines.__setitem__(3, lines[3].replace('"sad"', '"bored"')),
     r"iemocap.jsonl:4: emo 'bored' is not in label_map.json"),
    (lambda lines: lines.__setitem__(4, lines[4].replace("downloads/iemocap", "data/x")),
     r"iemocap.jsonl:5: wav 'data/x/Session1/.*' does not start with 'downloads/iemocap'"),
])
def test_a_malformed_line_is_one_error_naming_file_and_line(tmp_path, change, message):
    folder = emobox_tree(tmp_path / "EmoBox", tmp_path / "wavs")
    path = folder / "iemocap.jsonl"
    lines = path.read_text().splitlines()
    change(lines)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EmoplugError, match=f"^dataset.path: {message}"):
        load(folder, tmp_path, wav_root=str(tmp_path / "wavs"))


def test_missing_folder_and_unknown_labels_are_named(tmp_path):
    with pytest.raises(EmoplugError, match=f"dataset.path: {tmp_path / 'nope'} does not exist"):
        load(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmoplugError, match="has no empty.jsonl; is it EmoBox's data/<corpus>"):
        load(tmp_path / "empty", tmp_path)
    folder = emobox_tree(tmp_path / "EmoBox", tmp_path / "wavs")
    problems = get_registry().build("dataset", {"type": "emobox", "path": str(folder),
                                                "labels": ["Angry", "Bored"]}).check()
    assert [p.setting for p in problems] == ["labels"] and "'Bored'" in problems[0].message


def test_published_table_totals_the_readme():
    assert len(PUBLISHED_UTTERANCES) == 32
    assert sum(PUBLISHED_UTTERANCES.values()) == 262020  # the README's Total row


def test_summary_prints_the_published_count_and_validate_passes(tmp_path):
    folder = emobox_tree(tmp_path / "EmoBox", tmp_path / "wavs")
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""
        name: emobox_iemocap
        dataset: {{type: emobox, path: {folder}, wav_root: {tmp_path / "wavs"}}}
        protocol: {{type: fold_files, format: emobox, path: {folder}}}
        audio: {{mfcc: {{type: mfcc, hop_ms: 20}}}}
        grid: {{audio: [mfcc], approach: [direct]}}
        cache_dir: {tmp_path / "cache"}
        """))
    summary = CliRunner().invoke(main, ["data", "summary", str(path)])
    assert summary.exit_code == 0, summary.output
    assert "published counts (EmoBox README (Datasets table, #Utts)):" in summary.stdout
    assert "differs from the published counts (12 of 5531 files present)" in summary.stdout
    validate = CliRunner().invoke(main, ["validate", str(path)])
    assert validate.exit_code == 0, validate.output
    assert "2 folds" in validate.output
