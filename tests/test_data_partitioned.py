"""The msp_podcast and meld datasets on small synthetic trees in their published layouts, and
the official_partitions protocol that splits them by their published partitions."""

from __future__ import annotations

import csv
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
from emoplug_data import meld, msp_podcast

MSP_HEADER = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender",
              "Split_Set"]
#: (partition, speaker, podcast, codes): every primary emotion in every partition
MSP_GROUPS = [("Train", "1", 1, "ASHUFDCN"), ("Train", "2", 2, "ASHUFDCNOX"),
              ("Train", "Unknown", 3, "ASHN"), ("Development", "3", 4, "ASHUFDCN"),
              ("Test1", "4", 5, "ASHUFDCN"), ("Test2", "4", 6, "ASHUFDCN")]


def write_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def msp_tree(root: Path) -> list[list[object]]:
    """An MSP-Podcast folder: Labels/labels_consensus.csv, Audios/, Transcripts/ (one
    transcript missing), plus a row whose labels are not released."""
    rows: list[list[object]] = []
    for partition, speaker, podcast, codes in MSP_GROUPS:
        for segment, code in enumerate(codes, start=1):
            name = f"MSP-PODCAST_{podcast:04d}_{segment:04d}.wav"
            rows.append([name, code, 4.5, 2.0 + segment / 10, 3.5, speaker,
                         "Female" if speaker in ("1", "3") else "Male", partition])
            write_wav(root / "Audios" / name)
            if (podcast, segment) != (1, 2):
                (root / "Transcripts").mkdir(parents=True, exist_ok=True)
                (root / "Transcripts" / name.replace(".wav", ".txt")).write_text(
                    f"words of segment {segment}\n", encoding="utf-8")
    rows.append(["MSP-PODCAST_0009_0001.wav", "", "", "", "", "Unknown", "Unknown", "Test3"])
    write_wav(root / "Audios" / "MSP-PODCAST_0009_0001.wav")
    write_csv(root / "Labels" / "labels_consensus.csv", MSP_HEADER, rows)
    return rows


MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
               "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]
SENTIMENT_OF = {"anger": "negative", "disgust": "negative", "fear": "negative",
                "joy": "positive", "neutral": "neutral", "sadness": "negative",
                "surprise": "positive"}


def meld_tree(root: Path, audio_root: Path | None = None) -> dict[str, list[list[object]]]:
    """MELD's three CSVs (each split: every emotion, two dialogues, recurring characters)
    and one extracted WAV per row under <split>/dia{D}_utt{U}.wav; returns each CSV's rows."""
    speakers = {"train": ["Ross", "Rachel"], "dev": ["Ross", "Monica"],
                "test": ["Rachel", "Joey"]}
    written = {}
    for split in meld.SPLITS:
        rows = []
        for n, emotion in enumerate(meld.EMOTIONS):
            dialogue, utterance = divmod(n, 4)
            rows.append([n + 1, f"Line {n}, about {emotion} “quoted”.",
                         speakers[split][n % 2], emotion, SENTIMENT_OF[emotion], dialogue,
                         utterance, 4, 7, "00:20:57,256", "00:21:00,049"])
            write_wav((audio_root or root) / split / f"dia{dialogue}_utt{utterance}.wav")
        write_csv(root / f"{split}_sent_emo.csv", MELD_HEADER, rows)
        written[split] = rows
    return written


def build(config: dict, tmp_path: Path):
    return get_registry().build("dataset", config)


def load(config: dict, tmp_path: Path, need_audio: bool = True):
    return build(config, tmp_path).load(need_audio=need_audio, cache_dir=tmp_path / "cache")


def folds(corpus, **protocol):
    return get_registry().build("protocol", {"type": "official_partitions",
                                             **protocol}).folds(corpus)


# --- msp_podcast -------------------------------------------------------------------------

def test_msp_podcast_reads_labels_dimensions_speakers_and_transcripts(tmp_path):
    msp_tree(tmp_path / "MSP")
    corpus = load({"type": "msp_podcast", "root": str(tmp_path / "MSP")}, tmp_path)
    by_id = corpus.by_id()
    first = by_id["MSP-PODCAST_0001_0001"]
    assert (first.speaker, first.session, first.label, first.text) == (
        "1", "0001", "angry", "words of segment 1")
    assert first.avd == (2.1, 4.5, 3.5)  # (EmoVal, EmoAct, EmoDom)
    assert first.meta == {"partition": "Train", "gender": "Female", "speaker_known": True,
                          "code": "A"}
    assert first.audio == str(tmp_path / "MSP" / "Audios" / "MSP-PODCAST_0001_0001.wav")
    assert by_id["MSP-PODCAST_0001_0002"].text is None  # its transcript file is missing
    unknown = by_id["MSP-PODCAST_0003_0001"]
    assert (unknown.speaker, unknown.meta["speaker_known"]) == ("unknown_0003", False)
    assert corpus.labels == ("angry", "sad", "happy", "surprised", "fearful", "disgusted",
                             "contempt", "neutral") == msp_podcast.DEFAULT_LABELS
    assert corpus.avd_scale == (1.0, 7.0)
    assert corpus.meta["excluded"] == {"label other outside the label set": 1,
                                       "label no_agreement outside the label set": 1,
                                       "no EmoClass (labels not released)": 1}
    assert len(corpus.utterances) == 44
    assert any("1 utterances of msp_podcast have no transcript" in w
               for w in corpus.meta["warnings"])
    check = corpus.meta["published_counts"]
    assert check["unit"] == "partition"
    assert check["per_label"]["Train"] == {"found": 22, "published": 84030}
    assert check["per_label"]["Test3"] == {"found": 1, "published": 2347}


def test_msp_podcast_keeps_other_and_no_agreement_when_asked(tmp_path):
    msp_tree(tmp_path / "MSP")
    corpus = load({"type": "msp_podcast", "root": str(tmp_path / "MSP"),
                   "labels": ["neutral", "other", "no_agreement"]}, tmp_path, need_audio=False)
    assert sorted(u.label for u in corpus.utterances).count("other") == 1
    assert corpus.labels == ("neutral", "other", "no_agreement")
    problems = build({"type": "msp_podcast", "root": str(tmp_path / "MSP"),
                      "labels": ["neutral", "frustrated"]}, tmp_path).check()
    assert [p.setting for p in problems] == ["labels"] and "'frustrated'" in problems[0].message


def test_official_partitions_on_msp_podcast_tests_the_chosen_test_sets(tmp_path):
    msp_tree(tmp_path / "MSP")
    dataset = build({"type": "msp_podcast", "root": str(tmp_path / "MSP")}, tmp_path)
    info = dataset.describe()
    assert info.partitions == ("Train", "Development", "Test1", "Test2", "Test3")
    corpus = dataset.load(need_audio=False, cache_dir=tmp_path)
    partition = {u.id: u.meta["partition"] for u in corpus.utterances}
    (only,) = folds(corpus)
    assert only.name == "Test1"
    assert {partition[i] for i in only.train} == {"Train"}
    assert {partition[i] for i in only.dev} == {"Development"}
    assert {partition[i] for i in only.test} == {"Test1"} and len(only.test) == 8
    assert only.meta["speaker_dependent"] is False
    both = folds(corpus, test=["Test1", "Test2"])
    assert [f.name for f in both] == ["Test1", "Test2"]
    assert both[0].train == both[1].train and both[0].dev == both[1].dev
    protocol = get_registry().build("protocol", {"type": "official_partitions",
                                                 "test": ["Test9"]})
    with pytest.raises(EmoplugError, match=r"official_partitions.test: Test9 is not a "
                                           r"partition of this corpus \(Train, Development"):
        protocol.fold_names(info)
    with pytest.raises(EmoplugError, match="partition Development is used twice"):
        get_registry().build("protocol", {"type": "official_partitions",
                                          "test": ["Development"]}).fold_names(info)


def test_official_partitions_refuses_a_corpus_without_partitions(tmp_path):
    protocol = get_registry().build("protocol", {"type": "official_partitions"})
    demo = get_registry().build("dataset", {"type": "demo"})
    with pytest.raises(EmoplugError, match="publishes no official partitions"):
        protocol.fold_names(demo.describe())


def test_msp_podcast_bad_rows_are_one_error_naming_file_and_line(tmp_path):
    root = tmp_path / "MSP"
    rows = msp_tree(root)
    labels = root / "Labels" / "labels_consensus.csv"
    rows[4][1] = "Z"
    write_csv(labels, MSP_HEADER, rows)
    with pytest.raises(EmoplugError, match=r"^dataset.root: Labels/labels_consensus.csv:6: "
                                           r"unknown EmoClass 'Z'"):
        load({"type": "msp_podcast", "root": str(root)}, tmp_path)
    text = labels.read_text().splitlines()
    text[3] += ",extra"
    labels.write_text("\n".join(text) + "\n")
    with pytest.raises(EmoplugError, match=r"^dataset.root: Labels/labels_consensus.csv line "
                                           r"4: 9 fields, the header has 8"):
        load({"type": "msp_podcast", "root": str(root)}, tmp_path)
    write_csv(labels, MSP_HEADER[:-1], [r[:-1] for r in rows])
    with pytest.raises(EmoplugError, match="has no column Split_Set"):
        load({"type": "msp_podcast", "root": str(root)}, tmp_path)
    labels.unlink()
    with pytest.raises(EmoplugError, match="has no Labels/labels_consensus.csv"):
        load({"type": "msp_podcast", "root": str(root)}, tmp_path)


def test_msp_podcast_skips_non_numeric_dimensions_naming_the_line(tmp_path):
    root = tmp_path / "MSP"
    rows = msp_tree(root)
    rows[0][2] = "high"
    write_csv(root / "Labels" / "labels_consensus.csv", MSP_HEADER, rows)
    corpus = load({"type": "msp_podcast", "root": str(root)}, tmp_path, need_audio=False)
    assert corpus.skipped_examples["non-numeric EmoVal/EmoAct/EmoDom"] == [
        "Labels/labels_consensus.csv:2"]
    rows[0][2], rows[1][7] = 4.5, ""
    write_csv(root / "Labels" / "labels_consensus.csv", MSP_HEADER, rows)
    corpus = load({"type": "msp_podcast", "root": str(root)}, tmp_path, need_audio=False)
    assert corpus.meta["excluded"]["no Split_Set"] == 1


# --- meld --------------------------------------------------------------------------------

def test_meld_reads_utterances_speakers_episodes_and_partitions(tmp_path):
    meld_tree(tmp_path / "MELD")
    corpus = load({"type": "meld", "root": str(tmp_path / "MELD")}, tmp_path)
    assert len(corpus.utterances) == 21 and corpus.labels == meld.EMOTIONS
    first = corpus.by_id()["dev_dia1_utt1"]
    assert (first.speaker, first.session, first.label) == ("Monica", "S04E07", "sadness")
    assert first.text == "Line 5, about sadness “quoted”."
    assert first.meta == {"partition": "dev", "dialog": "dev_dia1", "emotion": "sadness",
                          "sentiment": "negative", "season": "4", "episode": "7",
                          "starttime": "00:20:57,256", "endtime": "00:21:00,049"}
    assert first.audio == str(tmp_path / "MELD" / "dev" / "dia1_utt1.wav")
    check = corpus.meta["published_counts"]
    assert check["per_label"]["neutral (dev)"] == {"found": 1, "published": 470}
    assert check["per_label"]["anger (test)"] == {"found": 1, "published": 345}
    assert check["published_total"] == 13708


def test_meld_sentiment_target_and_label_subset(tmp_path):
    meld_tree(tmp_path / "MELD")
    corpus = load({"type": "meld", "root": str(tmp_path / "MELD"), "target": "sentiment"},
                  tmp_path, need_audio=False)
    assert corpus.labels == meld.SENTIMENTS
    assert {u.label for u in corpus.utterances} == {"negative", "neutral", "positive"}
    four = load({"type": "meld", "root": str(tmp_path / "MELD"),
                 "labels": ["neutral", "joy", "anger", "sadness"]}, tmp_path, need_audio=False)
    assert len(four.utterances) == 12
    assert four.meta["excluded"]["label fear outside the label set"] == 3


def test_meld_official_split_shares_speakers_and_says_so(tmp_path):
    meld_tree(tmp_path / "MELD")
    corpus = load({"type": "meld", "root": str(tmp_path / "MELD")}, tmp_path,
                  need_audio=False)
    (fold,) = folds(corpus)
    assert (fold.name, len(fold.train), len(fold.dev), len(fold.test)) == ("test", 7, 7, 7)
    assert all(i.startswith("test_") for i in fold.test)
    assert fold.meta["speaker_dependent"] is True  # Rachel speaks in train and test


def test_meld_audio_pattern_split_folders_and_missing_wavs(tmp_path):
    meld_tree(tmp_path / "MELD", audio_root=tmp_path / "wavs")
    for split, folder in (("train", "train_splits"), ("dev", "dev_splits_complete"),
                          ("test", "output_repeated_splits_test")):
        (tmp_path / "wavs" / split).rename(tmp_path / "wavs" / folder)
    config = {"type": "meld", "root": str(tmp_path / "MELD"),
              "audio_root": str(tmp_path / "wavs"),
              "split_folders": {"train": "train_splits", "dev": "dev_splits_complete",
                                "test": "output_repeated_splits_test"}}
    corpus = load(config, tmp_path)
    assert corpus.by_id()["test_dia0_utt0"].audio == str(
        tmp_path / "wavs" / "output_repeated_splits_test" / "dia0_utt0.wav")
    (tmp_path / "wavs" / "dev_splits_complete" / "dia1_utt2.wav").unlink()
    assert load(config, tmp_path).skipped == {"missing WAV": 1}
    skipping = load({**config, "missing_audio": "skip"}, tmp_path)
    assert skipping.skipped == {"no extracted WAV": 1}
    bad = build({**config, "audio_pattern": "{split}/{clip}.wav",
                 "split_folders": {"train": "t"}}, tmp_path).check()
    assert {p.setting for p in bad} == {"audio_pattern", "split_folders"}


def test_meld_bad_rows_are_one_error_naming_file_and_line(tmp_path):
    root = tmp_path / "MELD"
    rows = meld_tree(root)["dev"]
    rows[2][5] = "one"
    write_csv(root / "dev_sent_emo.csv", MELD_HEADER, rows)
    with pytest.raises(EmoplugError, match=r"^dataset.root: dev_sent_emo.csv:4: Dialogue_ID "
                                           r"'one' is not a number"):
        load({"type": "meld", "root": str(root)}, tmp_path)
    rows[2][5], rows[3][3] = 0, "happiness"
    write_csv(root / "dev_sent_emo.csv", MELD_HEADER, rows)
    with pytest.raises(EmoplugError, match=r"dev_sent_emo.csv:5: unknown Emotion 'happiness'"):
        load({"type": "meld", "root": str(root)}, tmp_path)
    (root / "test_sent_emo.csv").unlink()
    with pytest.raises(EmoplugError, match="has no test_sent_emo.csv"):
        load({"type": "meld", "root": str(root)}, tmp_path)


def test_the_published_numbers_add_up_to_the_published_totals():
    by_split = list(zip(*meld.PUBLISHED_BY_SPLIT.values(), strict=True))
    assert [sum(split) for split in by_split] == [9989, 1109, 2610]  # MELD README statistics
    assert meld.PUBLISHED.per_label["surprise (dev)"] == 150
    assert sum(meld.PUBLISHED.per_label.values()) == 13708
    assert meld.PUBLISHED.check(Counter(meld.PUBLISHED.per_label))["matches"]
    assert sum(msp_podcast.PUBLISHED.per_label.values()) == 151654  # release 1.11 total
    found = Counter(msp_podcast.PUBLISHED.per_label)
    found["Test1"] -= 1
    assert not msp_podcast.PUBLISHED.check(found)["matches"]


# --- the command line --------------------------------------------------------------------

RECIPE = """
name: {kind}
dataset: {{type: {kind}, root: {root}}}
protocol: {{type: official_partitions{protocol}}}
audio: {{mfcc: {{type: mfcc, hop_ms: 20}}}}
grid: {{audio: [mfcc], approach: [direct]}}
cache_dir: {cache}
"""


@pytest.mark.parametrize(("kind", "protocol", "unit", "present", "total", "folds_line"), [
    ("msp_podcast", ", test: [Test1, Test2]", "partition", 47, 151654, "2 folds"),
    ("meld", "", "emotion", 21, 13708, "1 folds")])
def test_summary_prints_the_published_counts_and_validate_passes(
        tmp_path, kind, protocol, unit, present, total, folds_line):
    root = tmp_path / kind
    msp_tree(root) if kind == "msp_podcast" else meld_tree(root)
    path = tmp_path / f"{kind}.yaml"
    path.write_text(textwrap.dedent(RECIPE).format(kind=kind, root=root, protocol=protocol,
                                                   cache=tmp_path / "cache"))
    summary = CliRunner().invoke(main, ["data", "summary", str(path)])
    assert summary.exit_code == 0, summary.output
    assert f"differs from the published counts ({present} of {total} files present)" \
        in summary.stdout
    assert f"  {unit}" in summary.stdout and "leakage audit" in summary.stdout
    validate = CliRunner().invoke(main, ["validate", str(path)])
    assert validate.exit_code == 0, validate.output
    assert folds_line in validate.output
    # MELD's characters recur across its splits; the folds line and the audit say so
    assert f"speaker_dependent={kind == 'meld'}" in summary.stdout


def test_validate_names_a_malformed_labels_file_in_one_line(tmp_path):
    root = tmp_path / "MSP"
    rows = msp_tree(root)
    rows[2][1] = "?"
    write_csv(root / "Labels" / "labels_consensus.csv", MSP_HEADER, rows)
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE).format(kind="msp_podcast", root=root, protocol="",
                                                   cache=tmp_path / "cache"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {path}: dataset.root: Labels/labels_consensus.csv"
                                     ":4: unknown EmoClass '?' (expected one of A, S, H, U, F, "
                                     "D, C, N, O, X)")


def test_plugins_lists_the_new_datasets_and_protocol():
    listed = CliRunner().invoke(main, ["plugins"])
    assert listed.exit_code == 0, listed.output
    rows = {tuple(line.split()[:2]) for line in listed.output.splitlines() if line.strip()}
    for kind, name in (("dataset", "msp_podcast"), ("dataset", "meld"), ("dataset", "emobox"),
                       ("dataset", "cremad"), ("protocol", "official_partitions")):
        assert (kind, name) in rows
