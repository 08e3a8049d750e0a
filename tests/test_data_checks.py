"""Data a study cannot use is refused before anything runs: `emoplug validate` reads the
dataset, and `emoplug run` checks it before writing its run folder (one line per problem,
exit 2). Skipped items are reported once and recorded in plan.json, result.json and the
report."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fakes import FakeDataset, fake_registry

from emoplug import DatasetInfo, hookimpl
from emoplug.cli import main
from emoplug.data.loading import fold_problems
from emoplug.errors import RecipeError
from emoplug.recipe import build_plan
from emoplug.types import Fold

LABELS = ("angry", "happy", "neutral", "sad")


def rows(n_speakers: int = 4, per_speaker: int = 4, audio: bool = False) -> list[dict]:
    """A small manifest: speakers s0.., one session each, every label."""
    out = []
    for s in range(n_speakers):
        for i in range(per_speaker):
            row = {"id": f"s{s}u{i}", "speaker": f"s{s}", "session": f"S{s}",
                   "text": f"words {s} {i}", "label": LABELS[i % len(LABELS)]}
            if audio:
                row["audio"] = f"wav/s{s}u{i}.wav"
            out.append(row)
    return out


def write_csv(path: Path, table: list[dict], header: list[str] | None = None) -> Path:
    header = header or list(table[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header)] + [",".join(str(r.get(c, "")) for c in header)
                                                    for r in table]) + "\n")
    return path


def write_wavs(folder: Path, table: list[dict]) -> None:
    for row in table:
        path = folder / row["audio"]
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")


def recipe(folder: Path, dataset: str, modality: str = "text") -> Path:
    grid = "text: [bert]" if modality == "text" else "audio: [mfcc]"
    path = folder / "r.yaml"
    path.write_text(textwrap.dedent(f"""
        name: checks
        dataset: {dataset}
        protocol: {{type: loso}}
        text: {{bert: {{type: bert, tiny: true, mode: frozen}}}}
        audio: {{mfcc: {{type: mfcc, n_mfcc: 13, hop_ms: 20, encoder: {{hidden: 8}}}}}}
        train: {{epochs: 1}}
        grid: {{{grid}, approach: [direct]}}
        cache_dir: {folder / 'cache'}
        output_dir: {folder / 'out'}
        """))
    return path


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(path: Path, *overrides: str) -> str:
    """The one error line of `validate` and of `run` (which leaves no run folder)."""
    check = invoke("validate", path, *overrides)
    assert check.exit_code == 2 and check.stdout == "", check.output
    lines = check.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), check.stderr
    run = invoke("run", path, *overrides)
    assert run.exit_code == 2 and run.stderr == check.stderr
    assert not (path.parent / "out").exists()  # no plan.json left behind
    return lines[0].removeprefix(f"error: {path}: ")


def test_a_single_class_is_refused(tmp_path):
    """Today: every metric is reported as 100.0 ± 0.0."""
    table = [dict(r, label="angry") for r in rows()]
    write_csv(tmp_path / "m.csv", table)
    assert refused(recipe(tmp_path, "{type: manifest, path: m.csv}")) == (
        "dataset: every labelled utterance of 'm' (16) has the label 'angry'; classes need "
        "at least two labels")


def test_a_header_only_manifest_is_refused(tmp_path):
    """Today: 'valid (1 cells, 0 jobs)', and `run` exits 0 having done nothing."""
    write_csv(tmp_path / "m.csv", [], header=["id", "speaker", "session", "text", "label"])
    assert refused(recipe(tmp_path, "{type: manifest, path: m.csv}")) == (
        "dataset.path: m.csv has no rows")


def test_rows_all_lacking_a_required_field_are_refused(tmp_path):
    """Today: 'valid (1 cells, 0 jobs)', and `run` exits 0 having done nothing."""
    write_csv(tmp_path / "m.csv", [dict(r, speaker="") for r in rows()])
    assert refused(recipe(tmp_path, "{type: manifest, path: m.csv}")) == (
        "dataset.path: m.csv has no row with both id and speaker (16 rows)")


def test_a_plan_without_jobs_is_refused(tmp_path):
    """A dataset that describes no sessions gives no folds: zero jobs is an error."""
    class Empty(FakeDataset):
        name = "empty"

        def describe(self) -> DatasetInfo:
            return DatasetInfo(sessions=())

    class EmptyPlugin:
        @hookimpl
        def emoplug_register_datasets(self, register):
            register(Empty)

    registry = fake_registry()
    registry.add_plugin(EmptyPlugin(), "empty")
    data = {"name": "r", "dataset": {"type": "empty"}, "protocol": {"type": "fakeloso"},
            "grid": {"audio": ["mfcc"], "approach": ["direct"]}}
    with pytest.raises(RecipeError, match="protocol: fakeloso makes no folds of this dataset"):
        build_plan(data, "r.yaml", registry)


def test_duplicate_ids_are_refused(tmp_path):
    """Today: `run` keeps one row per id silently while `data summary` counts both."""
    table = rows()
    table[5] = dict(table[5], id=table[1]["id"])
    write_csv(tmp_path / "m.csv", table)
    path = recipe(tmp_path, "{type: manifest, path: m.csv}")
    assert refused(path) == ("dataset: 1 utterance id(s) of 'm' occur more than once "
                             "('s0u1' (2 times)); ids must be unique")
    assert invoke("data", "summary", path).exit_code == 2


def test_an_empty_fold_is_refused(tmp_path):
    """Session S3's rows all lack text: LOSO announced a fold S3 that holds nothing."""
    write_csv(tmp_path / "m.csv", [dict(r, text="") if r["session"] == "S3" else r
                                   for r in rows()])
    assert refused(recipe(tmp_path, "{type: manifest, path: m.csv}")) == (
        "protocol: loso fold(s) S3 hold no utterance of the corpus (the plan expected them "
        "from the dataset's description)")


def test_empty_train_or_test_sets_are_problems():
    folds = [Fold("A", ("x",), (), ()), Fold("B", (), (), ("y",))]
    assert fold_problems(folds, ["A", "B"], "protocol", "loso") == [
        "protocol: fold A has an empty test set", "protocol: fold B has an empty train set"]


def test_missing_wavs_are_counted_and_refused(tmp_path):
    """Today: validate says 'valid'; run skips the rows with a warning."""
    table = rows(audio=True)
    write_wavs(tmp_path, table[2:])
    write_csv(tmp_path / "m.csv", table)
    message = refused(recipe(tmp_path, "{type: manifest, path: m.csv}", "audio"))
    assert message == (f"dataset: 2 audio file(s) that 'm' names do not exist (e.g. "
                       f"{tmp_path}/wav/s0u0.wav, {tmp_path}/wav/s0u1.wav); fix the paths or "
                       "remove their entries")


def test_every_item_skipped_shows_example_paths(tmp_path):
    """Today: '... has no usable utterances (skipped: {...})' and a warning that points at
    `emoplug data summary`, which fails the same way."""
    table = rows(audio=True)
    for row in table:
        (tmp_path / row["audio"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / row["audio"]).write_bytes(b"not a wav")
    write_csv(tmp_path / "m.csv", table)
    assert refused(recipe(tmp_path, "{type: manifest, path: m.csv}", "audio")) == (
        f"dataset: no usable utterance in 'm': all 16 items were skipped (unreadable WAV: 16,"
        f" e.g. {tmp_path}/wav/s0u0.wav, {tmp_path}/wav/s0u1.wav, {tmp_path}/wav/s0u2.wav)")


def test_a_missing_iemocap_root_is_refused_before_the_run_folder(tmp_path):
    """Today: validate passes; run fails and leaves plan.json behind."""
    path = recipe(tmp_path, f"{{type: iemocap, root: {tmp_path / 'IEMOCAP'}}}")
    assert refused(path) == f"dataset.root: {tmp_path / 'IEMOCAP'} does not exist"
    (tmp_path / "IEMOCAP").mkdir()
    assert refused(path) == (f"dataset.root: {tmp_path / 'IEMOCAP'} is not an "
                             "IEMOCAP_full_release folder (no Session1..Session5/dialog inside)")


def test_relative_paths_are_resolved_against_the_recipe_folder(tmp_path, monkeypatch):
    """Today, run from elsewhere: 'protocol: manifest: good.csv does not exist'."""
    study = tmp_path / "study"
    write_csv(study / "good.csv", rows())
    path = recipe(study, "{type: manifest, path: good.csv}")
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        "  data: 16 utterances of 'good', 4 labels, 4 folds, skipped 0, excluded 0")
    # an override's relative path is the user's, from the current folder
    assert invoke("validate", path, "dataset.path=study/good.csv").exit_code == 0
    missing = invoke("validate", path, "dataset.path=nope.csv")
    assert missing.exit_code == 2
    assert missing.stderr == f"error: {path}: dataset.path: {tmp_path}/nope.csv does not exist\n"
    # job ids keep the path as written, wherever the recipe lies
    ids = json.loads(invoke("plan", path, "--json").stdout)["job_list"]
    monkeypatch.chdir(study)
    assert json.loads(invoke("plan", "r.yaml", "--json").stdout)["job_list"] == ids


def test_skips_are_reported_once_and_recorded(tmp_path):
    """Today: two warning lines per skip reason, and no trace in result.json or the report."""
    table = rows(audio=True)
    write_wavs(tmp_path, table)
    (tmp_path / table[3]["audio"]).write_bytes(b"broken")
    table[6]["label"] = "Angry"
    write_csv(tmp_path / "m.csv", table)
    dataset = "{type: manifest, path: m.csv, labels: [angry, happy, neutral, sad]}"
    path = recipe(tmp_path, dataset, "audio")
    check = invoke("validate", path)
    assert check.exit_code == 0, check.output
    assert "skipped 2 (label not in the label set, but for case or spaces (angry): 1; " \
           "unreadable WAV: 1)" in check.stdout
    run = invoke("run", path, "-q")
    assert run.exit_code == 0, run.output
    warnings = [line for line in run.stderr.splitlines() if "skipped" in line and
                "warning" in line]
    assert warnings == [
        "emoplug: warning: m: skipped 2 of 16 items (label not in the label set, but for "
        "case or spaces (angry): 1; unreadable WAV: 1); 'emoplug data summary' lists examples"]
    expected = {"utterances": 14, "excluded": {},
                "skipped": {"label not in the label set, but for case or spaces (angry)": 1,
                            "unreadable WAV": 1}}
    out = tmp_path / "out"
    assert json.loads((out / "plan.json").read_text())["data"] == expected
    results = [json.loads(p.read_text()) for p in out.glob("jobs/*/result.json")]
    assert len(results) == 4 and all(r["data"] == expected for r in results)
    report = invoke("report", out, "--format", "md")
    assert report.exit_code == 0, report.output
    text = (out / "report" / "report.md").read_text()
    assert "## Data" in text and "| skipped | unreadable WAV | 1 |" in text
    summary = invoke("data", "summary", path)
    assert f"unreadable WAV: 1 (e.g. {tmp_path}/wav/s0u3.wav)" in summary.stdout
    assert "(angry): 1 (e.g. s1u2: 'Angry')" in summary.stdout


def test_report_data_section_of_a_run_without_counts(tmp_path):
    from emoplug.report.collect import RunData
    from emoplug.report.data import data_section

    older = data_section(RunData(tmp_path, {"jobs": []}, [], []))
    assert older.empty and "records no data counts" in older.empty and not older.tables
    clean = data_section(RunData(tmp_path, {"data": {"utterances": 9, "skipped": {},
                                                     "excluded": {}}}, [], []))
    assert clean.empty == "9 utterances studied; nothing skipped or excluded."
