"""Published fold files both ways: ``emoplug folds export`` and the ``fold_files`` protocol.

A small five-session IEMOCAP_full_release tree (8 four-class utterances a session, one ``exc``
and one ``hap`` among them) stands in for the corpus.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from test_data_iemocap import HEADER

from emoplug import Corpus, EmoplugError, Fold, Utterance, foldfiles
from emoplug.cli import main
from emoplug.data.loading import load_corpus_and_folds
from emoplug.recipe import load_plan
from emoplug.registry import get_registry

#: per session: dialog suffix -> (utterance suffix, IEMOCAP code); ``fru`` is not four-class
DIALOGS = {
    "F_impro01": [("F000", "neu"), ("M000", "hap"), ("F001", "exc"), ("M001", "ang"),
                  ("F002", "sad"), ("M002", "fru")],
    "M_script01_1": [("F000", "sad"), ("M000", "neu"), ("M001", "ang")],
}
NO_WAV = "Ses01F_impro01_M001"
EMOBOX_MAP = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad", "exc": "Happy"}


def four_class_codes() -> dict[str, str]:
    """Every four-class utterance of the tree: id -> IEMOCAP code."""
    return {f"Ses0{n}{suffix}_{utt}": code for n in range(1, 6)
            for suffix, utterances in DIALOGS.items() for utt, code in utterances
            if code != "fru"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"
    for n in range(1, 6):
        base = root / f"Session{n}"
        for suffix, utterances in DIALOGS.items():
            dialog = f"Ses0{n}{suffix}"
            ids = [(f"{dialog}_{utt}", code) for utt, code in utterances]
            for sub in ("EmoEvaluation", "transcriptions"):
                (base / "dialog" / sub).mkdir(parents=True, exist_ok=True)
            (base / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(HEADER + "\n\n".join(
                f"[1.0000 - 2.0000]\t{i}\t{code}\t[2.5000, 2.5000, 2.5000]" for i, code in ids))
            (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(
                "".join(f"{i} [001.0000-002.0000]: words of {i}\r\n" for i, _ in ids))
            wav_dir = base / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True)
            for i, _ in ids:
                if i != NO_WAV:
                    soundfile.write(str(wav_dir / f"{i}.wav"), np.zeros(1600, np.float32), 16000,
                                    subtype="PCM_16")
    return root


def write_recipe(tmp_path: Path, tree: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""
        name: f
        dataset: {{type: iemocap, root: "{tree}"}}
        protocol: {{type: loso}}
        text: {{bert: {{type: bert, tiny: true}}}}
        grid: {{text: [bert], approach: [direct]}}
        cache_dir: "{tmp_path / 'cache'}"
        """))
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def folds_of(recipe: Path, *overrides: str) -> list[Fold]:
    return load_corpus_and_folds(load_plan(recipe, overrides).corpus_request())[1]


def fold_files(fmt: str, path: Path, **settings) -> list[str]:
    return ["protocol.type=fold_files", f"protocol.format={fmt}", f"protocol.path={path}",
            *(f"protocol.{k}={v}" for k, v in settings.items())]


def corpus_of(tree: Path, tmp_path: Path) -> Corpus:
    dataset = get_registry().build("dataset", {"type": "iemocap", "root": str(tree)})
    return dataset.load(need_audio=False, cache_dir=tmp_path)


def read_folds(corpus: Corpus, fmt: str, path: Path, **settings) -> list[Fold]:
    protocol = get_registry().build(
        "protocol", {"type": "fold_files", "format": fmt, "path": str(path), **settings})
    return protocol.folds(corpus)


def write_emobox(folder: Path, codes: dict[str, str], label_map: dict | None = EMOBOX_MAP
                 ) -> Path:
    """LOSO folds as EmoBox publishes them: fold k tests session k."""
    root = folder / "iemocap"
    for k in range(1, 6):
        (root / f"fold_{k}").mkdir(parents=True)
        for part in ("train", "test"):
            ids = [i for i in codes if i.startswith(f"Ses0{k}") == (part == "test")]
            (root / f"fold_{k}" / f"iemocap_{part}_fold_{k}.jsonl").write_text("".join(
                json.dumps({"key": f"iemocap-{i}", "dataset": "iemocap",
                            "wav": f"downloads/iemocap/Session{i[4]}/sentences/wav/{i}.wav",
                            "type": "raw", "sample_rate": 16000, "num_frame": 1600.0,
                            "task": "category", "length": 0.1, "emo": codes[i],
                            "channel": 1}) + "\n" for i in ids))
    if label_map is not None:
        (root / "label_map.json").write_text(json.dumps(label_map))
    return root


def write_s3prl(folder: Path, codes: dict[str, str]) -> Path:
    """LOSO folds as s3prl publishes them; ``speaker`` is the dialog's prefix (Ses01F)."""
    for k in range(1, 6):
        (folder / f"Session{k}").mkdir(parents=True)
        for part in ("train", "test"):
            items = [{"path": f"Session{i[4]}/sentences/wav/{i[:-5]}/{i}.wav",
                      "label": "hap" if codes[i] == "exc" else codes[i], "speaker": i[:6]}
                     for i in codes if i.startswith(f"Ses0{k}") == (part == "test")]
            (folder / f"Session{k}" / f"{part}_meta_data.json").write_text(json.dumps(
                {"labels": {"neu": 0, "hap": 1, "ang": 2, "sad": 3}, "meta_data": items}))
    return folder


@pytest.mark.parametrize("fmt, folder, names", [
    ("emobox", "iemocap", [f"fold_{k}" for k in range(1, 6)]),
    ("s3prl", ".", [f"Session{k}" for k in range(1, 6)]),
])
def test_exported_loso_folds_come_back_fold_by_fold(tree, tmp_path, fmt, folder, names):
    recipe = write_recipe(tmp_path, tree)
    out = tmp_path / "out"
    result = invoke("folds", "export", recipe, "--format", fmt, "--output", out)
    assert result.exit_code == 0, result.output
    assert "Ses01 -> " in result.stdout and "train 32 (dev 8 included), test 8" in result.stdout
    loso = folds_of(recipe)
    back = folds_of(recipe, *fold_files(fmt, out / folder))
    assert [f.name for f in back] == names
    assert [f.test for f in back] == [f.test for f in loso]
    assert [set(f.train + f.dev) for f in back] == [set(f.train + f.dev) for f in loso]
    # the same dev settings carve the same dev set from the same training part
    assert [(f.train, f.dev) for f in back] == [(f.train, f.dev) for f in loso]
    assert {(f.meta["protocol"], f.meta["fold_files"], f.meta["speaker_dependent"])
            for f in back} == {("fold_files", fmt, False)}


def test_export_writes_the_reference_fields(tree, tmp_path):
    recipe = write_recipe(tmp_path, tree)
    for fmt in ("emobox", "s3prl"):
        assert invoke("folds", "export", recipe, "--format", fmt, "--output",
                      tmp_path / fmt).exit_code == 0
    emobox = tmp_path / "emobox" / "iemocap"
    assert json.loads((emobox / "label_map.json").read_text()) == {
        "neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad"}
    lines = (emobox / "fold_1" / "iemocap_test_fold_1.jsonl").read_text().splitlines()
    records = {r["key"]: r for r in map(json.loads, lines)}
    assert len(records) == 8
    assert records["iemocap-Ses01F_impro01_F001"] == {
        "key": "iemocap-Ses01F_impro01_F001", "dataset": "iemocap",
        "wav": "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F001.wav", "type": "raw",
        "sample_rate": 16000, "num_frame": 1600.0, "task": "category", "length": 0.1,
        "emo": "hap", "channel": 1}  # exc is happy under four_class
    assert records[f"iemocap-{NO_WAV}"]["length"] is None  # no WAV, no header to read
    train = (emobox / "fold_1" / "iemocap_train_fold_1.jsonl").read_text().splitlines()
    assert len(train) == 32  # train + dev
    meta = json.loads((tmp_path / "s3prl" / "Session1" / "test_meta_data.json").read_text())
    assert meta["labels"] == {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
    by_path = {item["path"]: item for item in meta["meta_data"]}
    assert by_path["Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav"] == {
        "path": "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav",
        "label": "hap", "speaker": "Ses01_M"}  # the utterance's speaker, not the dialog's


def test_export_refuses_a_folder_that_holds_files(tree, tmp_path):
    recipe = write_recipe(tmp_path, tree)
    first = invoke("folds", "export", recipe, "--format", "s3prl", "--output", tmp_path / "o")
    assert first.exit_code == 0
    again = invoke("folds", "export", recipe, "--format", "s3prl", "--output", tmp_path / "o")
    assert again.exit_code == 2 and "already holds files" in again.stderr


def test_s3prl_export_needs_audio_named_after_the_id(tmp_path):
    corpus = Corpus("x", ("a", "b"), [
        Utterance("u1", "s1", "S1", audio=str(tmp_path / "w" / "take1.wav"), label="a"),
        Utterance("u2", "s2", "S2", audio=str(tmp_path / "w" / "u2.wav"), label="b")])
    fold = Fold("S1", ("u2",), (), ("u1",))
    with pytest.raises(EmoplugError, match=r"1 audio files are not named after their "
                                           r"utterance id \(u1\)"):
        foldfiles.write_fold_files("s3prl", corpus, [fold], tmp_path / "out")


def test_emobox_folds_with_exc_and_a_label_map_are_read(tree, tmp_path):
    corpus = corpus_of(tree, tmp_path)
    codes = four_class_codes()
    assert {"exc", "hap"} <= set(codes.values())
    folds = read_folds(corpus, "emobox", write_emobox(tmp_path, codes))
    assert [f.name for f in folds] == [f"fold_{k}" for k in range(1, 6)]
    for k, fold in enumerate(folds, start=1):
        assert fold.test == tuple(sorted(i for i in codes if i.startswith(f"Ses0{k}")))
        assert not set(fold.train + fold.dev) & set(fold.test)
    # a code known only through label_map.json
    joyful = {**codes, "Ses02F_impro01_M000": "joy"}
    root = write_emobox(tmp_path / "joy", joyful, {**EMOBOX_MAP, "joy": "Happy"})
    assert len(read_folds(corpus, "emobox", root)) == 5
    without_map = write_emobox(tmp_path / "nomap", joyful, label_map=None)
    train = without_map / "fold_1" / "iemocap_train_fold_1.jsonl"
    with pytest.raises(EmoplugError, match=re.escape(
            f"fold_1: 1 ids have another label in the fold files than in the corpus ({train}: "
            "Ses02F_impro01_M000: 'joy' vs 'happy')")):
        read_folds(corpus, "emobox", without_map)


def test_missing_and_unknown_ids_are_one_line_with_counts(tree, tmp_path):
    codes = four_class_codes()
    del codes["Ses02F_impro01_F000"]
    codes.update({"Ses01F_impro01_F998": "neu", "Ses01F_impro01_F999": "sad"})
    root = write_emobox(tmp_path, codes)
    recipe = write_recipe(tmp_path, tree)
    result = invoke("data", "summary", recipe, *fold_files("emobox", root))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {recipe}: protocol: fold_files: fold_1: 2 ids in the fold files are not in "
        "the corpus (Ses01F_impro01_F998, Ses01F_impro01_F999); 1 corpus utterances are in no "
        "list of fold_1 (Ses02F_impro01_F000)")


def test_an_id_in_train_and_test_is_an_error(tree, tmp_path):
    root = write_emobox(tmp_path, four_class_codes())
    train = root / "fold_3" / "iemocap_train_fold_3.jsonl"
    train.write_text(train.read_text() + json.dumps(
        {"key": "iemocap-Ses03F_impro01_F000", "emo": "neu"}) + "\n")
    with pytest.raises(EmoplugError, match=r"^fold_files: fold_3: 1 ids are in both its train "
                                           r"and test lists \(Ses03F_impro01_F000\)$"):
        read_folds(corpus_of(tree, tmp_path), "emobox", root)


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('{"emo": "neu"}', "no 'key'"),
    ('{"key": "meld-dia1_utt0", "emo": "neu"}', "key 'meld-dia1_utt0' does not start"),
])
def test_a_malformed_emobox_line_names_file_and_line(tree, tmp_path, line, message):
    root = write_emobox(tmp_path, four_class_codes())
    test = root / "fold_2" / "iemocap_test_fold_2.jsonl"
    first, *rest = test.read_text().splitlines()
    test.write_text("\n".join([first, line, *rest]) + "\n")
    with pytest.raises(EmoplugError) as error:
        read_folds(corpus_of(tree, tmp_path), "emobox", root)
    assert str(error.value).startswith(f"fold_files: {test}:2: {message}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    ('{"labels": {}, "meta_data": [\n{"path": "a.wav"},\n{oops}]}', ":3: not JSON"),
    ('{"labels": {}, "meta_data": [{"path": "a.wav"}, {"label": "neu"}]}',
     ": meta_data[1] has no 'path'"),
    ('{"labels": {}}', ": no 'meta_data' list"),
])
def test_a_malformed_s3prl_file_names_file_and_place(tree, tmp_path, text, message):
    root = write_s3prl(tmp_path / "meta_data", four_class_codes())
    broken = root / "Session4" / "train_meta_data.json"
    broken.write_text(text)
    with pytest.raises(EmoplugError, match=re.escape(f"fold_files: {broken}{message}")):
        read_folds(corpus_of(tree, tmp_path), "s3prl", root)


def test_s3prl_speaker_field_is_not_a_speaker(tree, tmp_path):
    corpus = corpus_of(tree, tmp_path)
    speakers = {u.id: u.speaker for u in corpus.utterances}
    folds = read_folds(corpus, "s3prl", write_s3prl(tmp_path / "meta_data", four_class_codes()),
                       dev="speaker")
    assert [f.name for f in folds] == [f"Session{k}" for k in range(1, 6)]
    for fold in folds:
        dev_speaker = fold.meta["dev_speaker"]
        assert re.fullmatch(r"Ses0\d_[FM]", dev_speaker)  # ours, not the file's "Ses01F"
        # the dev speaker's utterances of both kinds of dialog, and nobody else's
        assert set(fold.dev) == {i for i in fold.train + fold.dev if speakers[i] == dev_speaker}
        assert not fold.meta["speaker_dependent"]


def test_fold_names_come_from_the_files_at_plan_time(tree, tmp_path):
    recipe = write_recipe(tmp_path, tree)
    root = write_emobox(tmp_path, four_class_codes())
    plan = invoke("plan", recipe, *fold_files("emobox", root), "--json")
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["folds"] == [f"fold_{k}" for k in range(1, 6)]
    missing = invoke("validate", recipe, *fold_files("s3prl", tmp_path / "nowhere"))
    assert missing.exit_code == 2
    assert f"fold_files: {tmp_path / 'nowhere'} is not a folder" in missing.stderr


def test_an_id_listed_twice_in_one_list_names_file_and_ids(tree, tmp_path):
    root = write_emobox(tmp_path, four_class_codes())
    train = root / "fold_2" / "iemocap_train_fold_2.jsonl"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([*lines, lines[3], lines[0], lines[3]]) + "\n")
    ids = sorted(json.loads(lines[i])["key"].removeprefix("iemocap-") for i in (0, 3))
    with pytest.raises(EmoplugError) as error:
        read_folds(corpus_of(tree, tmp_path), "emobox", root)
    assert str(error.value) == (f"fold_files: {train}: 2 ids are listed more than once "
                                f"({ids[0]}, {ids[1]})")
    root = write_s3prl(tmp_path / "meta_data", four_class_codes())
    test = root / "Session3" / "test_meta_data.json"
    data = json.loads(test.read_text())
    data["meta_data"].append(data["meta_data"][1])
    test.write_text(json.dumps(data))
    stem = Path(data["meta_data"][1]["path"]).stem
    with pytest.raises(EmoplugError, match=re.escape(
            f"fold_files: {test}: 1 ids are listed more than once ({stem})")):
        read_folds(corpus_of(tree, tmp_path), "s3prl", root)


def test_s3prl_files_sharing_a_stem_in_different_folders_are_an_error(tree, tmp_path):
    root = write_s3prl(tmp_path / "meta_data", four_class_codes())
    train = root / "Session1" / "train_meta_data.json"
    data = json.loads(train.read_text())
    first = data["meta_data"][0]["path"]
    data["meta_data"].append({"path": f"elsewhere/{Path(first).name}", "label": "neu"})
    train.write_text(json.dumps(data))
    with pytest.raises(EmoplugError) as error:
        read_folds(corpus_of(tree, tmp_path), "s3prl", root)
    index = len(data["meta_data"]) - 1
    assert str(error.value) == (
        f"fold_files: {train}: meta_data[{index}]: 'elsewhere/{Path(first).name}' has the file "
        f"name of '{first}' in another folder (s3prl's utterance id is the file's stem: "
        f"{Path(first).stem} is ambiguous)")


def test_test_ids_the_subset_filter_removes_are_an_error(tree, tmp_path):
    """subset: improvised drops the scripted dialogs' utterances; the published test lists
    hold them, so the scores would not be on the published test set."""
    root = write_emobox(tmp_path, four_class_codes())
    corpus = corpus_of(tree, tmp_path)
    scripted = sorted(i for i in four_class_codes() if i.startswith("Ses01M_script"))
    test = root / "fold_1" / "iemocap_test_fold_1.jsonl"
    with pytest.raises(EmoplugError) as error:
        read_folds(corpus, "emobox", root, subset="improvised")
    message = str(error.value)
    assert message.startswith(
        f"fold_files: fold_1: subset 'improvised' removes {len(scripted)} test ids of {test} "
        f"({', '.join(scripted[:3])}")
    assert "\n" not in message
    assert len(read_folds(corpus, "emobox", root)) == 5  # subset: all keeps them


def test_a_label_the_corpus_cannot_confirm_is_an_error(tree, tmp_path):
    import dataclasses

    corpus = corpus_of(tree, tmp_path)
    unlabelled = "Ses04F_impro01_F000"
    corpus = dataclasses.replace(corpus, utterances=[
        dataclasses.replace(u, label=None) if u.id == unlabelled else u
        for u in corpus.utterances])
    root = write_emobox(tmp_path, four_class_codes())
    with pytest.raises(EmoplugError, match=re.escape(
            "fold_1: 1 ids have a label in the fold files but none in the corpus, which cannot "
            f"confirm it ({root / 'fold_1' / 'iemocap_train_fold_1.jsonl'}: {unlabelled})")):
        read_folds(corpus, "emobox", root)
