"""The emodb, ravdess and cremad datasets on small synthetic trees in their published layouts,
and their published-counts check."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from emoplug import EmoplugError
from emoplug.cli import main
from emoplug.registry import get_registry
from emoplug_data import cremad, emodb, ravdess

EMODB_FILES = ["03a01Fa", "03a02Wb", "08b01Nc", "08a05Ta", "10a07La", "10b03Ea", "16a01Aa",
               "03a01Xa", "notes_v2"]  # X: no such emotion letter; notes_v2: not a code
RAVDESS_FILES = {
    "Actor_01": ["03-01-01-01-01-01-01", "03-01-02-02-02-01-01", "03-01-05-01-01-02-01",
                 "03-02-03-01-01-01-01"],  # the last: song
    "Actor_02": ["03-01-02-01-01-01-02", "03-01-08-02-02-02-02", "03-01-09-01-01-01-02"],
    "Actor_03": ["03-01-04-01-02-01-03", "03-01-07-02-01-01-03", "take2"],
}
CREMAD_FILES = ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TSI_NEU_XX", "1002_WSI_SAD_LO",
                "1091_ITH_FEA_MD", "1091_IWL_DIS_XX", "1001_ABC_ANG_XX", "1001_DFA_ANG"]


def write_wavs(folder: Path, stems: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        soundfile.write(str(folder / f"{stem}.wav"), np.zeros(1600, dtype=np.float32), 16000,
                        subtype="PCM_16")


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, Path]:
    write_wavs(tmp_path / "emodb" / "wav", EMODB_FILES)
    for actor, stems in RAVDESS_FILES.items():
        write_wavs(tmp_path / "ravdess" / actor, stems)
    write_wavs(tmp_path / "CREMA-D" / "AudioWAV", CREMAD_FILES)
    return {"emodb": tmp_path / "emodb", "ravdess": tmp_path / "ravdess",
            "cremad": tmp_path / "CREMA-D"}


def load(kind: str, root: Path, tmp_path: Path, need_audio: bool = True, **settings):
    dataset = get_registry().build("dataset", {"type": kind, "root": str(root), **settings})
    return dataset.load(need_audio=need_audio, cache_dir=tmp_path / "cache")


def test_emodb_reads_speaker_label_and_codes(trees, tmp_path):
    corpus = load("emodb", trees["emodb"], tmp_path)
    by_id = corpus.by_id()
    assert sorted(by_id) == sorted(EMODB_FILES[:7])
    first = by_id["03a01Fa"]
    assert (first.speaker, first.session, first.label, first.text) == ("03", "03", "happy", None)
    assert first.meta == {"gender": "M", "text_code": "a01", "version": "a", "emotion": "happy"}
    assert first.audio == str(trees["emodb"] / "wav" / "03a01Fa.wav")
    assert {u.id: u.label for u in corpus.utterances} == {
        "03a01Fa": "happy", "03a02Wb": "angry", "08b01Nc": "neutral", "08a05Ta": "sad",
        "10a07La": "bored", "10b03Ea": "disgusted", "16a01Aa": "fearful"}
    assert by_id["08b01Nc"].meta["gender"] == "F"
    assert corpus.labels == emodb.EmodbDataset.emotions
    assert corpus.skipped == {"file name does not parse": 2}
    assert sorted(corpus.skipped_examples["file name does not parse"]) == [
        "03a01Xa.wav: unknown emotion letter X",
        "notes_v2.wav: expected speaker, text code, emotion and version, e.g. 03a01Fa"]


def test_ravdess_reads_actor_statement_and_excludes_song(trees, tmp_path):
    corpus = load("ravdess", trees["ravdess"], tmp_path)
    by_id = corpus.by_id()
    first = by_id["03-01-01-01-01-01-01"]
    assert (first.speaker, first.session, first.label) == ("Actor_01", "Actor_01", "neutral")
    assert first.text == "Kids are talking by the door"
    assert first.meta == {"gender": "M", "intensity": "normal", "statement": "01",
                          "repetition": 1, "vocal_channel": "speech", "emotion": "neutral"}
    second = by_id["03-01-08-02-02-02-02"]
    assert (second.label, second.text, second.meta["gender"], second.meta["intensity"]) == (
        "surprised", "Dogs are sitting by the door", "F", "strong")
    assert "03-02-03-01-01-01-01" not in by_id
    assert corpus.meta["excluded"] == {"vocal channel 02 (song)": 1}
    assert corpus.skipped == {"file name does not parse": 2}
    assert len(corpus.utterances) == 7
    assert corpus.labels == ravdess.RavdessDataset.emotions


def test_ravdess_merges_calm_into_neutral_and_can_keep_song(trees, tmp_path):
    corpus = load("ravdess", trees["ravdess"], tmp_path, merge_calm_into_neutral=True,
                  include_song=True)
    labels = Counter(u.label for u in corpus.utterances)
    assert labels["neutral"] == 3 and "calm" not in labels and "calm" not in corpus.labels
    assert corpus.by_id()["03-02-03-01-01-01-01"].meta["vocal_channel"] == "song"
    # song is outside the published speech counts
    assert corpus.meta["published_counts"]["present"] == 7
    problems = get_registry().build("dataset", {
        "type": "ravdess", "root": str(trees["ravdess"]), "merge_calm_into_neutral": True,
        "labels": ["neutral", "calm"]}).check()
    assert [p.setting for p in problems] == ["labels"] and "'calm'" in problems[0].message


def test_cremad_reads_actor_sentence_and_level(trees, tmp_path):
    corpus = load("cremad", trees["cremad"], tmp_path, labels=["neutral", "angry", "sad"])
    by_id = corpus.by_id()
    assert sorted(by_id) == ["1001_DFA_ANG_XX", "1002_TSI_NEU_XX", "1002_WSI_SAD_LO"]
    first = by_id["1001_DFA_ANG_XX"]
    assert (first.speaker, first.session, first.label, first.text) == (
        "1001", "1001", "angry", "Don't forget a jacket")
    assert by_id["1002_WSI_SAD_LO"].meta == {"sentence": "WSI", "level": "low",
                                             "emotion": "sad"}
    assert by_id["1002_TSI_NEU_XX"].text == "The surface is slick"
    assert corpus.labels == ("neutral", "angry", "sad")
    assert corpus.meta["excluded"] == {"label happy outside the label set": 1,
                                       "label fearful outside the label set": 1,
                                       "label disgusted outside the label set": 1}
    assert sorted(corpus.skipped_examples["file name does not parse"]) == [
        "1001_ABC_ANG_XX.wav: unknown sentence code ABC",
        "1001_DFA_ANG.wav: expected actor_sentence_emotion_level, e.g. 1001_DFA_ANG_XX"]


def test_an_unreadable_wav_is_skipped_when_audio_is_needed(trees, tmp_path):
    (trees["cremad"] / "AudioWAV" / "1076_MTI_SAD_XX.wav").write_bytes(b"")
    assert load("cremad", trees["cremad"], tmp_path).skipped["unreadable WAV"] == 1
    text_only = load("cremad", trees["cremad"], tmp_path, need_audio=False)
    assert "1076_MTI_SAD_XX" in text_only.by_id()


@pytest.mark.parametrize("kind", ["emodb", "ravdess", "cremad"])
def test_a_missing_root_is_one_error_naming_it(kind, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(EmoplugError, match=f"dataset.root: {missing} does not exist"):
        load(kind, missing, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmoplugError, match="holds no .wav files"):
        load(kind, tmp_path / "empty", tmp_path)


def published_names(module, counts: dict[str, int]) -> list[str]:
    """File stems with exactly ``counts`` per emotion, in the corpus's naming scheme."""
    stems = []
    for emotion, n in counts.items():
        for i in range(n):
            if module is emodb:
                letter = {v: k for k, v in emodb.EMOTION_LETTERS.items()}[emotion]
                speaker = list(emodb.SPEAKER_GENDERS)[i % 10]
                stems.append(f"{speaker}a{i // 10 % 100:02d}{letter}{'abcdefghijklm'[i // 1000]}")
            elif module is ravdess:
                code = {v: k for k, v in ravdess.EMOTION_CODES.items()}[emotion]
                stems.append(f"03-01-{code}-01-01-{i // 24 % 100:02d}-{i % 24 + 1:02d}")
            else:
                code = {v: k for k, v in cremad.EMOTION_CODES.items()}[emotion]
                stems.append(f"{1001 + i % 91}_DFA_{code}_XX")
    return stems


@pytest.mark.parametrize("module", [emodb, ravdess, cremad])
def test_the_published_counts_check_matches_only_the_full_corpus(module):
    counts = module.PUBLISHED.per_label
    found = Counter(module.parse_name(stem).emotion
                    for stem in published_names(module, counts))
    check = module.PUBLISHED.check(found)
    assert check["matches"] and check["present"] == check["published_total"]
    assert check["published_total"] == {emodb: 535, ravdess: 1440, cremad: 7442}[module]
    first, second = list(counts)[:2]
    found[first] -= 1
    missing_one = module.PUBLISHED.check(found)
    assert not missing_one["matches"] and missing_one["present"] == check["present"] - 1
    assert missing_one["per_label"][first] == {"found": counts[first] - 1,
                                               "published": counts[first]}
    found[second] += 1  # the published total, but one file in the wrong class
    shifted = module.PUBLISHED.check(found)
    assert not shifted["matches"] and shifted["present"] == shifted["published_total"]


RECIPE = """
name: {kind}
dataset: {{type: {kind}, root: {root}{extra}}}
protocol: {{type: {protocol}}}
audio: {{mfcc: {{type: mfcc, hop_ms: 20}}}}
grid: {{audio: [mfcc], approach: [direct]}}
cache_dir: {cache}
"""


@pytest.mark.parametrize(("kind", "extra", "protocol", "present", "total", "folds"), [
    ("emodb", "", "loso_speaker", 7, 535, 4),
    ("ravdess", ", labels: [neutral, calm, angry, sad]", "loso", 7, 1440, 3),
    ("cremad", "", "loso", 6, 7442, 3)])
def test_summary_prints_the_published_counts_and_validate_passes(
        trees, tmp_path, kind, extra, protocol, present, total, folds):
    path = tmp_path / f"{kind}.yaml"
    path.write_text(textwrap.dedent(RECIPE).format(
        kind=kind, root=trees[kind], extra=extra, protocol=protocol, cache=tmp_path / "cache"))
    summary = CliRunner().invoke(main, ["data", "summary", str(path)])
    assert summary.exit_code == 0, summary.output
    assert f"differs from the published counts ({present} of {total} files present)" \
        in summary.stdout
    assert "published counts (" in summary.stdout and "file name does not parse: 2" \
        in summary.stdout
    as_json = json.loads(CliRunner().invoke(main, ["data", "summary", str(path), "--json"]).stdout)
    check = as_json["published_counts"]
    assert (check["present"], check["published_total"], check["matches"]) == (
        present, total, False)
    validate = CliRunner().invoke(main, ["validate", str(path)])
    assert validate.exit_code == 0, validate.output
    assert f"{folds} folds" in validate.output


def test_validate_names_a_missing_root_in_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    missing = tmp_path / "no_emodb"
    path.write_text(textwrap.dedent(RECIPE).format(
        kind="emodb", root=missing, extra="", protocol="loso", cache=tmp_path / "cache"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {path}: dataset.root: {missing} does not exist"
