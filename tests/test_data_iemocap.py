"""The iemocap dataset on a small fake IEMOCAP_full_release tree in the original format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from emoplug import EmoplugError
from emoplug.registry import get_registry

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"

EVALUATIONS = {
    ("Session1", "Ses01F_impro01"): [
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]",
        "C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()",
        "[10.0100 - 11.3925]\tSes01F_impro01_M000\thap\t[4.0000, 3.5000, 3.0000]",
        "[12.0000 - 14.5000]\tSes01F_impro01_F001\texc\t[5.5000, 4.0000, 3.5000]",
        "[15.0000 - 16.0000]\tSes01F_impro01_M001\tfru\t[2.0000, 3.5000, 3.5000]",
        "[17.0000 - 18.0000]\tSes01F_impro01_F002\txxx\t[2.5000, 2.5000, 2.5000]",
        "[19.0000 - 20.0000]\tSes01F_impro01_M002\tang\t[1.5000, 4.0000, 4.0000]",
        "[21.0000 - 22.0000\tSes01F_impro01_F003\tneu",
    ],
    ("Session1", "Ses01M_script01_1"): [
        "[1.0000 - 2.0000]\tSes01M_script01_1_F000\tsad\t[1.5000, 1.5000, 2.0000]",
        "[3.0000 - 4.0000]\tSes01M_script01_1_M000\tneu\t[3.0000, 2.0000, 3.0000]",
        "[5.0000 - 6.0000]\tSes01M_script01_1_M001\tsur\t[3.5000, 4.0000, 3.0000]",
    ],
    ("Session2", "Ses02F_impro02"): [
        "[1.5000 - 3.2500]\tSes02F_impro02_M000\tang\t[1.0000, 4.5000, 0.5000]",
        "[4.0000 - 5.0000]\tSes02F_impro02_F000\tdis\t[2.0000, 3.0000, 3.0000]",
        "[6.0000 - 7.0000]\tSes02F_impro02_F001\tneu\t[3.0000, 2.5000, 2.5000]",
    ],
}
TRANSCRIPTS = {
    "Ses01F_impro01": [
        "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.",
        "Ses01F_impro01_M000 [010.0100-011.3925]: Do you have your forms?",
        "M: Yeah.",
        "Ses01F_impro01_F001 [012.0000-014.5000]: Yes! I got the job!",
        "Ses01F_impro01_MXX0 [014.6000-014.9000]: Hmm.",
        "Ses01F_impro01_M001 [015.0000-016.0000]: This line is so long.",
        "Ses01F_impro01_F002 [017.0000-018.0000]: Whatever.",
        "Ses01F_impro01_M002 [019.0000-020.0000]: Get out.",
        "Ses01F_impro01_F003 [021.0000-022.0000]: Fine.",
    ],
    "Ses01M_script01_1": [
        "Ses01M_script01_1_F000 [001.0000-002.0000]: I miss him.",
        "Ses01M_script01_1_M001 [005.0000-006.0000]: Really?",
    ],
    "Ses02F_impro02": [
        "Ses02F_impro02_M000 [001.5000-003.2500]: You did what?",
        "Ses02F_impro02_F000 [004.0000-005.0000]: Ugh, gross.",
        "Ses02F_impro02_F001 [006.0000-007.0000]: It's on the table.",
        "Ses02F_impro02_F009 no time stamps here",
    ],
}
MISSING_WAV = "Ses01F_impro01_M002"
BROKEN_WAV = "Ses02F_impro02_F001"


def build_tree(root: Path, with_audio: bool = True) -> Path:
    """A fake IEMOCAP_full_release: LF evaluations, CRLF transcriptions, 0.1 s WAVs."""
    for (session, dialog), lines in EVALUATIONS.items():
        base = root / session / "dialog"
        (base / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (base / "transcriptions").mkdir(parents=True, exist_ok=True)
        (base / "EmoEvaluation" / f"{dialog}.txt").write_text(
            HEADER + "\n\n".join(lines) + "\n", newline="\n")
        (base / "transcriptions" / f"{dialog}.txt").write_bytes(
            "".join(f"{line}\r\n" for line in TRANSCRIPTS[dialog]).encode())
        if not with_audio:
            continue
        wav_dir = root / session / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True, exist_ok=True)
        for line in TRANSCRIPTS[dialog]:
            utt_id = line.split(" ")[0]
            if not utt_id.startswith("Ses") or utt_id in (MISSING_WAV, "Ses02F_impro02_F009"):
                continue
            if utt_id == BROKEN_WAV:
                (wav_dir / f"{utt_id}.wav").write_bytes(b"not a wav file")
            else:
                soundfile.write(str(wav_dir / f"{utt_id}.wav"),
                                np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "IEMOCAP_full_release")


def load(root: Path, cache: Path, need_audio: bool = True, **settings):
    dataset = get_registry().build("dataset", {"type": "iemocap", "root": str(root), **settings})
    return dataset.load(need_audio=need_audio, cache_dir=cache)


def test_records_are_parsed_field_by_field(tree: Path, tmp_path: Path, capsys):
    corpus = load(tree, tmp_path / "cache")
    by_id = corpus.by_id()
    first = by_id["Ses01F_impro01_F000"]
    assert (first.speaker, first.session, first.text, first.label) == (
        "Ses01_F", "Ses01", "Excuse me.", "neutral")
    assert first.avd == (2.5, 2.5, 2.5)
    assert first.audio == str(tree / "Session1/sentences/wav/Ses01F_impro01/"
                                      "Ses01F_impro01_F000.wav")
    assert first.meta == {"dialog": "Ses01F_impro01", "gender": "F", "improvised": True,
                          "start": 6.2901, "end": 8.2357, "code": "neu"}
    male = by_id["Ses01F_impro01_M000"]  # dialog recorded by F, utterance spoken by M
    assert (male.speaker, male.meta["gender"], male.label) == ("Ses01_M", "M", "happy")
    assert male.text == "Do you have your forms?"  # CRLF stripped
    excited = by_id["Ses01F_impro01_F001"]
    assert excited.label == "happy" and excited.meta["code"] == "exc"
    assert excited.avd == (5.5, 4.0, 3.5)  # above the scale, kept as annotated
    scripted = by_id["Ses01M_script01_1_F000"]
    assert scripted.meta["improvised"] is False and scripted.speaker == "Ses01_F"
    assert by_id["Ses02F_impro02_M000"].avd == (1.0, 4.5, 0.5)
    assert corpus.labels == ("neutral", "happy", "angry", "sad")
    assert corpus.avd_scale == (1.0, 5.0)
    # the dataset only counts skips; the core reports them, once per run
    assert capsys.readouterr().err == ""


def test_skips_are_counted_by_reason(tree: Path, tmp_path: Path):
    corpus = load(tree, tmp_path / "cache")
    assert corpus.skipped == {"missing WAV": 1, "unreadable WAV": 1, "no transcript": 1,
                              "malformed EmoEvaluation line": 1, "malformed transcription line": 1}
    assert corpus.skipped_examples["malformed transcription line"] == ["Ses02F_impro02.txt:4"]
    assert corpus.skipped_examples["no transcript"] == ["Ses01M_script01_1_M000"]
    assert corpus.skipped_examples["missing WAV"][0].endswith(f"{MISSING_WAV}.wav")
    assert corpus.skipped_examples["malformed EmoEvaluation line"] == ["Ses01F_impro01.txt:18"]
    assert corpus.meta["excluded"] == {
        "label xxx (annotators disagree)": 1, "label fru outside the label set": 1,
        "label sur outside the label set": 1, "label dis outside the label set": 1}
    ids = {u.id for u in corpus.utterances}
    assert not any("XX" in i for i in ids)
    assert "Ses01F_impro01_F002" not in ids  # xxx


@pytest.mark.parametrize("label_set, expected", [
    ("four_class", {"neutral": 1, "happy": 2, "angry": 1, "sad": 1}),
    ("six_class", {"neutral": 1, "happy": 1, "angry": 1, "sad": 1, "frustrated": 1,
                   "excited": 1}),
    ("all", {"neutral": 1, "happy": 1, "excited": 1, "angry": 1, "sad": 1, "frustrated": 1,
             "surprised": 1, "disgusted": 1}),
])
def test_label_set_counts(tree: Path, tmp_path: Path, label_set: str, expected: dict):
    corpus = load(tree, tmp_path / "cache", label_set=label_set)
    counts = {label: sum(u.label == label for u in corpus.utterances) for label in corpus.labels}
    assert {k: v for k, v in counts.items() if v} == expected
    assert set(corpus.labels) >= set(expected)


def test_configurable_merges_and_labels(tree: Path, tmp_path: Path):
    no_merge = load(tree, tmp_path / "cache", merge={})
    assert "Ses01F_impro01_F001" not in no_merge.by_id()  # exc no longer counts as happy
    custom = load(tree, tmp_path / "cache", merge={"exc": "happy", "fru": "angry"})
    assert custom.by_id()["Ses01F_impro01_M001"].label == "angry"
    five = load(tree, tmp_path / "cache", labels=["neutral", "happy", "angry", "sad", "surprised"])
    assert five.labels[-1] == "surprised"
    assert five.by_id()["Ses01M_script01_1_M001"].label == "surprised"


def test_text_only_load_needs_no_sentences(tmp_path: Path):
    root = build_tree(tmp_path / "IEMOCAP_full_release", with_audio=False)
    corpus = load(tmp_path, tmp_path / "cache", need_audio=False)  # parent folder is accepted
    assert "missing WAV" not in corpus.skipped and "unreadable WAV" not in corpus.skipped
    assert MISSING_WAV in corpus.by_id() and len(corpus.utterances) == 7
    assert corpus.meta["root"] == str(root)
    with_audio = load(root, tmp_path / "cache", need_audio=True)
    assert with_audio.utterances == [] and with_audio.skipped["missing WAV"] == 7


def test_describe_is_static(tmp_path: Path):
    dataset = get_registry().build("dataset", {"type": "iemocap", "root": str(tmp_path / "no")})
    info = dataset.describe()
    assert info.sessions == ("Ses01", "Ses02", "Ses03", "Ses04", "Ses05")
    assert len(info.speakers) == 10 and info.speakers[:2] == ("Ses01_F", "Ses01_M")


def test_non_iemocap_root_is_one_line_error(tmp_path: Path):
    with pytest.raises(EmoplugError, match="^dataset.root: .*/nowhere does not exist$"):
        load(tmp_path / "nowhere", tmp_path / "cache")
    (tmp_path / "somewhere").mkdir()
    (tmp_path / "somewhere" / "notes.txt").write_text("hello")
    with pytest.raises(EmoplugError, match="is not an IEMOCAP_full_release folder") as err:
        load(tmp_path / "somewhere", tmp_path / "cache")
    assert "\n" not in str(err.value)
