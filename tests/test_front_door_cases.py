"""Every bad or odd input of issue 29 ("front door, round 3"), each through the command line:
one ``error:`` line naming the file, key or line (exit 2, 3 for a full disk) or one warning
line, no traceback, and nothing written where nothing should be."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from emoplug.cli import main

TINY = """
name: tiny
dataset: {type: demo, utterances_per_speaker: 4}
protocol: {type: kfold, k: 2}
train: {epochs: 1, save: best}
audio: {mfcc: {type: mfcc}}
fusion: {small: {type: none, hidden: 8}}
grid: {audio: [mfcc], fusion: [small], approach: [direct]}
"""
MANIFEST_RECIPE = """
name: m
dataset: {type: manifest, path: m.csv}
protocol: {type: loso}
text: {bert: {type: bert, tiny: true}}
grid: {text: [bert], approach: [direct]}
"""
COLUMNS = ["id", "speaker", "session", "text", "label", "valence", "arousal", "dominance"]
LABELS = ["happy", "sad", "angry", "neutral"]


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def one_line(result, code: int, *words: str, prefix: str = "error: ") -> str:
    """The one line ``result`` printed on stderr, checked: exit ``code``, no traceback,
    starting with ``prefix`` and naming each of ``words``."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr and not isinstance(result.exception, Exception) \
        or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "warning:" in line]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def rows(n: int = 40, **change) -> list[list[str]]:
    """``n`` manifest rows over 4 speakers (one session each) and 4 balanced labels."""
    out = [[f"u{i}", f"spk{i % 4}", f"S{i % 4}", f"words of utterance {i}", LABELS[i % 4],
            "3.0", "2.0", "4.0"] for i in range(n)]
    for key, value in change.items():
        index, column = key.rsplit("_", 1)
        out[int(index[1:])][COLUMNS.index(column)] = value
    return out


def manifest(tmp_path: Path, body: list[list[str]] | str, header=COLUMNS,
             recipe: str = MANIFEST_RECIPE, encoding: str = "utf-8") -> Path:
    """A recipe reading ``m.csv`` (``body``: rows, or the raw file text)."""
    if isinstance(body, str):
        (tmp_path / "m.csv").write_bytes(body.encode(encoding))
    else:
        with open(tmp_path / "m.csv", "w", newline="", encoding=encoding) as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(body)
    return write(tmp_path / "m.yaml", recipe)


def csv_text(body: list[list[str]], delimiter: str = ",") -> str:
    return "\n".join(delimiter.join(r) for r in [COLUMNS, *body]) + "\n"


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 2-job run (audio only, models saved), copied by the tests that change it."""
    root = tmp_path_factory.mktemp("tiny-run")
    recipe = write(root / "tiny.yaml", TINY)
    old = os.environ.get("EMOPLUG_CACHE")
    os.environ["EMOPLUG_CACHE"] = str(root / "cache")
    try:
        result = invoke("run", recipe, "--output", root / "run", "-q")
    finally:
        os.environ.pop("EMOPLUG_CACHE") if old is None else os.environ.update(
            EMOPLUG_CACHE=old)
    assert result.exit_code == 0, result.stderr
    return {"recipe": recipe, "run": root / "run", "cache": root / "cache"}


@pytest.fixture
def run_copy(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPLUG_CACHE", str(tiny_run["cache"]))
    shutil.copytree(tiny_run["run"], tmp_path / "run")
    return {"recipe": tiny_run["recipe"], "run": tmp_path / "run"}


# ---- tracebacks that became one line -------------------------------------------------------

def test_cache_dir_that_is_a_file(tmp_path):
    recipe = write(tmp_path / "r.yaml", TINY)
    (tmp_path / "afile").write_text("x")
    one_line(invoke("validate", recipe, f"cache_dir={tmp_path / 'afile'}"), 2, "cache_dir",
             str(tmp_path / "afile"), "not a folder")
    result = invoke("validate", recipe, env={"EMOPLUG_CACHE": str(tmp_path / "afile" / "c")})
    one_line(result, 2, "EMOPLUG_CACHE", str(tmp_path / "afile"))
    assert (tmp_path / "afile").read_text() == "x"


def test_latin1_manifest_names_the_line(tmp_path):
    text = csv_text(rows()).replace("utterance 5", "caf\u00e9 5")
    recipe = manifest(tmp_path, text, encoding="latin-1")
    one_line(invoke("validate", recipe), 2, "dataset.path", "m.csv line 7", "not UTF-8")


def test_text_cell_longer_than_csvs_field_limit(tmp_path):
    recipe = manifest(tmp_path, rows(**{"r3_text": "word " * 40_000}))
    assert invoke("plan", recipe).exit_code == 0
    assert invoke("validate", recipe).exit_code == 0


def test_folds_export_output_that_cannot_be_written(tmp_path, monkeypatch):
    recipe = write(tmp_path / "r.yaml", TINY)
    (tmp_path / "afile").write_text("x")
    one_line(invoke("folds", "export", recipe, "--format", "s3prl", "--output",
                    tmp_path / "afile" / "out"), 2, "--output", "under the file")
    one_line(invoke("folds", "export", recipe, "--format", "s3prl", "--output",
                    "/proc/emoplug-no-such"), 2, "--output", "/proc/emoplug-no-such")
    read_only(monkeypatch, tmp_path)
    one_line(invoke("folds", "export", recipe, "--format", "emobox", "--output",
                    tmp_path / "ro"), 2, "--output", "read-only file system")
    assert not (tmp_path / "ro").exists()


def read_only(monkeypatch, under: Path, after: int = 0) -> None:
    """Every ``tempfile.mkstemp`` (the writable-folder check, atomic JSON) in a folder
    under ``under``, after the first ``after``, raises EROFS, as on a read-only file system."""
    import tempfile

    real, calls = tempfile.mkstemp, []

    def mkstemp(*args, **kwargs):
        folder = str(kwargs.get("dir") or "")
        if folder.startswith(str(under)):
            calls.append(folder)
            if len(calls) > after:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), folder)
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_run_output_under_a_file_or_read_only(tmp_path, monkeypatch):
    recipe = write(tmp_path / "r.yaml", TINY)
    (tmp_path / "afile").write_text("x")
    one_line(invoke("run", recipe, "--output", tmp_path / "afile" / "run"), 2, "--output",
             str(tmp_path / "afile"))
    (tmp_path / "ro").mkdir()  # a folder on a read-only file system
    read_only(monkeypatch, tmp_path / "ro")
    one_line(invoke("run", recipe, "--output", tmp_path / "ro" / "run"), 2, "--output",
             "read-only file system", str(tmp_path / "ro" / "run"))
    assert not files_under(tmp_path / "ro") and not (tmp_path / "ro" / "run").exists()


def test_bad_feature_memory_stops_before_plan_json(tmp_path):
    recipe = write(tmp_path / "r.yaml", TINY)
    result = invoke("run", recipe, "--output", tmp_path / "run",
                    env={"EMOPLUG_FEATURE_MEMORY": "lots"})
    one_line(result, 2, "EMOPLUG_FEATURE_MEMORY='lots'")
    assert not (tmp_path / "run").exists()


def test_disk_full_during_a_run_is_one_line_exit_3_and_keeps_results(run_copy, monkeypatch):
    from emoplug.train import job_files

    out = run_copy["run"]
    finished = shutil.rmtree(next((out / "jobs").iterdir())) or None  # one job left to run
    real, calls = job_files.write_predictions, []

    def full(path, *args):
        calls.append(path)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(job_files, "write_predictions", full)
    line = one_line(invoke("run", run_copy["recipe"], "--output", out, "-q"), 3,
                    "no space left on device writing", "predictions.csv",
                    "finished jobs are kept", "run the same command to resume")
    assert calls and str(calls[0]) in line and finished is None
    results = [json.loads(p.read_text()) for p in out.glob("jobs/*/result.json")]
    assert [r["status"] for r in results] == ["done"]  # the other job's, intact
    assert not (out / "failures.log").exists()
    monkeypatch.setattr(job_files, "write_predictions", real)
    assert invoke("run", run_copy["recipe"], "--output", out, "-q").exit_code == 0  # resumes
    assert len(list(out.glob("jobs/*/result.json"))) == 2


def test_read_only_file_system_mid_run_is_one_line(run_copy, monkeypatch):
    out = run_copy["run"]
    shutil.rmtree(next((out / "jobs").iterdir()))
    read_only(monkeypatch, out, after=1)  # the writable-folder check passes, plan.json does not
    one_line(invoke("run", run_copy["recipe"], "--output", out, "-q"), 2,
             "read-only file system", str(out))


def test_weights_of_another_cell_in_predict(run_copy, tmp_path):
    from emoplug.model_folder import MODEL_JSON

    out = run_copy["run"]
    first, second = sorted((out / "jobs").iterdir())
    model = tmp_path / "model"
    shutil.copytree(first / "model", model)
    manifest_ = json.loads((model / MODEL_JSON).read_text())
    manifest_["components"]["fusion"]["hidden"] = 16  # a cell with a wider head
    (model / MODEL_JSON).write_text(json.dumps(manifest_))
    wav = next(Path(os.environ["EMOPLUG_CACHE"]).rglob("*.wav"))
    one_line(invoke("predict", model, "--audio", wav), 2, "model.safetensors",
             "does not match", "another size")
    assert second.is_dir()


# ---- wrong messages, now right -------------------------------------------------------------

def test_grid_of_nulls_gives_no_cells(tmp_path):
    recipe = write(tmp_path / "r.yaml", TINY.replace("grid: {audio: [mfcc], fusion: [small], ",
                                                     "grid: {text: [null], audio: [null], "))
    one_line(invoke("validate", recipe, "--no-data"), 2, "the grid gives no cells")


def test_bom_manifest_reads(tmp_path):
    recipe = manifest(tmp_path, rows(), encoding="utf-8-sig")
    result = invoke("validate", recipe)
    assert result.exit_code == 0 and "40 utterances" in result.stdout, result.stderr


def test_duplicate_header(tmp_path):
    header = [c if c != "valence" else "label" for c in COLUMNS]
    recipe = manifest(tmp_path, rows(), header=header)
    one_line(invoke("validate", recipe), 2, "m.csv line 1", "duplicate column 'label'")


def test_unquoted_comma_names_the_line_and_field_counts(tmp_path):
    text = csv_text(rows()).replace("utterance 5", "utterance, 5")
    recipe = manifest(tmp_path, text)
    one_line(invoke("validate", recipe), 2, "m.csv line 7", "9 fields, the header has 8")


def test_extra_fields_in_a_row(tmp_path):
    body = rows()
    body[10] = body[10] + ["surplus"]
    recipe = manifest(tmp_path, body)
    one_line(invoke("validate", recipe), 2, "m.csv line 12", "9 fields")


def test_truncated_result_json_is_damaged_in_the_report(run_copy, tmp_path):
    path = next(run_copy["run"].glob("jobs/*/result.json"))
    path.write_text(path.read_text()[:50])
    result = invoke("report", run_copy["run"], "--output", tmp_path / "rep", "--format", "md")
    assert result.exit_code == 0
    warnings = warnings_of(result)
    assert len(warnings) == 1 and "damaged" in warnings[0] and str(path) in warnings[0]
    assert "result.json is damaged" in (tmp_path / "rep" / "report.md").read_text()


def test_export_while_a_job_is_running(run_copy):
    job = next((run_copy["run"] / "jobs").iterdir())
    (job / "result.json").unlink()
    shutil.rmtree(job / "model")
    result = invoke("export", run_copy["run"], "--cell", "mfcc/small/direct")
    one_line(result, 2, "not finished", job.name)
    assert "train.save" not in result.stderr and not (run_copy["run"] / "exports").exists()


def test_extra_cells_alone_are_a_study(tmp_path):
    recipe = write(tmp_path / "r.yaml", TINY.replace(
        "grid: {audio: [mfcc], fusion: [small], approach: [direct]}",
        "grid: {audio: [mfcc], approach: []}\nextra: [{audio: mfcc, approach: direct}]"))
    result = invoke("validate", recipe, "--no-data")
    assert result.exit_code == 0 and "1 cells, 2 jobs" in result.stdout
    one_line(result, 0, "grid.approach", "extra cells run", prefix="emoplug: warning: ")


# ---- silent acceptances, now caught ---------------------------------------------------------

def test_attention_dim_not_divisible_by_heads_at_validate(tmp_path):
    recipe = write(tmp_path / "r.yaml", """
        name: att
        dataset: {type: demo, utterances_per_speaker: 4}
        text: {bert: {type: bert, tiny: true}}
        audio: {mfcc: {type: mfcc}}
        fusion: {att: {type: attention, dim: 10, heads: 3}}
        grid: {text: [bert], audio: [mfcc], fusion: [att], approach: [direct]}
        """)
    one_line(invoke("validate", recipe, "--no-data"), 2, "fusion.att.heads",
             "dim 10 is not divisible by 3 heads")
    one_line(invoke("run", recipe, "--output", tmp_path / "run"), 2, "fusion.att.heads")
    assert not (tmp_path / "run").exists()


def test_text_cell_without_a_text_column(tmp_path):
    body = [[r[0], r[1], r[2], f"{r[0]}.wav", r[4]] for r in rows()]
    recipe = manifest(tmp_path, body, header=["id", "speaker", "session", "audio", "label"])
    one_line(invoke("validate", recipe), 2, "reads text", "dataset.columns.text")


def test_nan_and_misspelt_labels(tmp_path):
    recipe = manifest(tmp_path, rows(r0_label="NaN", r1_label="Sad", r2_label="hapy"))
    result = invoke("validate", recipe)
    assert result.exit_code == 0 and "skipped 1 (no label: 1)" in result.stdout
    warnings = warnings_of(result)
    assert len(warnings) == 2, warnings
    assert "'Sad', 'sad'" in warnings[0] and "differ only in case" in warnings[0]
    assert "fewer than 5" in warnings[1] and "hapy: 1" in warnings[1]


def test_avd_outside_the_scale(tmp_path):
    recipe = manifest(tmp_path, rows(r0_valence="9.5", r1_arousal="-3"))
    result = invoke("validate", recipe)
    assert result.exit_code == 0
    one_line(result, 0, "2 of 120", "far outside avd_scale [1, 5]", prefix="emoplug: warning: ")
    manifest(tmp_path, rows(r0_valence="5.5"))  # as IEMOCAP's averages reach
    within = invoke("validate", recipe)
    assert within.exit_code == 0 and not warnings_of(within)
    hundred = [r[:5] + ["60", "70", "80"] for r in rows()]
    manifest(tmp_path, hundred)
    one_line(invoke("validate", recipe), 2, "dataset.avd_scale", "120 of 120")


def test_blank_sessions_are_warned(tmp_path):
    recipe = manifest(tmp_path, rows(r1_session="", r5_session="", r9_session=""))
    result = invoke("validate", recipe)
    assert result.exit_code == 0
    one_line(result, 0, "3 rows of m.csv have no session", prefix="emoplug: warning: ")


def wav_manifest(tmp_path: Path, damage=None) -> Path:
    """A manifest of 40 WAVs (audio cells); ``damage(paths)`` spoils some of them."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, rng.normal(0, 0.1, 4000).astype("float32"), 16000,
                        subtype="FLOAT")
        paths.append(path)
    if damage:
        damage(paths)
    body = [[r[0], r[1], r[2], f"u{i}.wav", r[4]] for i, r in enumerate(rows())]
    return manifest(tmp_path, body, header=["id", "speaker", "session", "audio", "label"],
                    recipe=MANIFEST_RECIPE.replace("text: {bert: {type: bert, tiny: true}}",
                                                   "audio: {mfcc: {type: mfcc}}")
                    .replace("grid: {text: [bert]", "grid: {audio: [mfcc]"))


def test_wav_cut_off_mid_data_is_warned_once_with_a_count(tmp_path):
    def cut(paths):
        for path in paths[:2]:
            data = path.read_bytes()
            path.write_bytes(data[:len(data) // 2])

    result = invoke("validate", wav_manifest(tmp_path, cut))
    assert result.exit_code == 0
    one_line(result, 0, "2 WAV file(s)", "cut off mid-data", "u0.wav",
             prefix="emoplug: warning: ")


def test_nan_wav_is_caught_at_validate_and_counted(tmp_path):
    def spoil(paths):
        soundfile.write(paths[3], np.full(4000, np.nan, dtype="float32"), 16000,
                        subtype="FLOAT")

    result = invoke("validate", wav_manifest(tmp_path, spoil))
    assert result.exit_code == 0
    assert "skipped 1 (NaN or infinite samples: 1)" in result.stdout


def test_a_label_that_never_occurs(tmp_path):
    recipe = manifest(tmp_path, rows(), recipe=MANIFEST_RECIPE.replace(
        "path: m.csv}", "path: m.csv, labels: [happy, sad, angry, neutral, fear]}"))
    one_line(invoke("validate", recipe), 2, "dataset.labels", "'fear'", "never occur")


def test_damaged_plan_json_in_the_report(run_copy):
    (run_copy["run"] / "plan.json").write_text('{"jobs": [')
    result = invoke("report", run_copy["run"])
    one_line(result, 2, "plan.json", "damaged")
    assert not (run_copy["run"] / "report").exists()


def test_unused_grid_fusion_is_warned_and_a_none_entry_honoured(tmp_path):
    from emoplug.recipe import load_plan

    recipe = write(tmp_path / "r.yaml", TINY)
    plan = load_plan(recipe)
    assert plan.cells[0].config["fusion"]["hidden"] == 8 and not plan.warnings
    other = write(tmp_path / "o.yaml", TINY.replace("fusion: [small]", "fusion: [late2]")
                  .replace("fusion: {small:", "fusion: {late2: {type: late}, small:"))
    one_line(invoke("plan", other), 0, "grid.fusion[0]", "'late2' is not used",
             prefix="emoplug: warning: ")


def test_emobox_export_into_a_non_empty_folder(tmp_path):
    recipe = write(tmp_path / "r.yaml", TINY)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    one_line(invoke("folds", "export", recipe, "--format", "emobox", "--output",
                    tmp_path / "out"), 2, "--output", "already holds files")
    assert files_under(tmp_path / "out") == [tmp_path / "out" / "keep.txt"]


def test_another_recipe_or_settings_into_a_run_folder(run_copy):
    out = run_copy["run"]
    before = (out / "plan.json").read_text()
    one_line(invoke("run", run_copy["recipe"], "name=other", "--output", out), 2, "--output",
             "recipe 'tiny'", "recipe 'other'", "--force")
    one_line(invoke("run", run_copy["recipe"], "train.epochs=2", "--output", out), 2,
             "2 of its 2 jobs would become stale", "mfcc/small/direct fold=fold1")
    assert (out / "plan.json").read_text() == before
    more_seeds = invoke("run", run_copy["recipe"], "seeds=[0]", "--output", out, "-q")
    assert more_seeds.exit_code == 0  # the same study: nothing refused
    forced = invoke("run", run_copy["recipe"], "name=other", "--output", out, "--force", "-q")
    assert forced.exit_code == 0, forced.stderr
    assert len(warnings_of(forced)) >= 1 and "(--force)" in warnings_of(forced)[0]
    plans = [json.loads(p.read_text()) for p in (out / "plans").glob("*.json")]
    assert sorted(p["recipe"]["name"] for p in plans) == ["other", "tiny"]
    assert json.loads((out / "plan.json").read_text())["recipe"]["name"] == "other"


# ---- also ----------------------------------------------------------------------------------

def test_every_file_honours_the_umask(tiny_run, tmp_path):
    from emoplug.files import write_json_atomic

    run = tiny_run["run"]
    for path in [run / "plan.json", *run.glob("jobs/*/result.json"),
                 *run.glob("jobs/*/predictions.csv"), *run.glob("jobs/*/model/*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(next(run.glob("jobs/*/model")).stat().st_mode) == 0o755
    old = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o640


@pytest.mark.parametrize("delimiter, name", [(";", "semicolon"), ("\t", "tab")])
def test_other_separators_are_detected_and_said(tmp_path, delimiter, name):
    recipe = manifest(tmp_path, csv_text(rows(), delimiter))
    result = invoke("validate", recipe)
    assert result.exit_code == 0 and "40 utterances" in result.stdout
    one_line(result, 0, f"m.csv is {name}-separated", prefix="emoplug: warning: ")


def test_a_folder_where_a_file_belongs(tmp_path):
    one_line(invoke("validate", tmp_path), 2, "is a directory", "validate --help")
    recipe = manifest(tmp_path, rows())
    (tmp_path / "dir.csv").mkdir()
    one_line(invoke("validate", recipe, f"dataset.path={tmp_path / 'dir.csv'}"), 2,
             "dataset.path", "is not a file")


def test_an_override_before_the_recipe(tmp_path):
    recipe = write(tmp_path / "r.yaml", TINY)
    one_line(invoke("validate", "seeds=[0]", recipe), 2, "seeds=[0]", "RECIPE comes first")


# ---- the battery of benchmarks/bad_inputs.py ------------------------------------------------

def test_bad_inputs_battery_is_large_and_classifies_each_outcome(tiny_run, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bad_inputs

    battery = bad_inputs.Battery(tmp_path)
    for build in (battery.recipe_keys, battery.manifests, battery.wavs, battery.environment,
                  battery.flags):
        build()
    battery.run_folders(tiny_run["run"])
    assert len(battery.cases) >= 150 and len({c.id for c in battery.cases}) == len(
        battery.cases)
    assert {c.group for c in battery.cases} == {"recipe", "manifest", "wav", "env", "flags",
                                                "run", "storage"}
    error = bad_inputs.Case("x", "g", [], bad_inputs.ERROR, ["train.epochs"])
    classify = bad_inputs.classify
    assert classify(error, 2, "", "error: r.yaml: train.epochs: bad\n") == ("GOOD", "")
    assert classify(error, 1, "", "Traceback (most recent call last):\n  x\nValueError: y")[
        0] == "TRACEBACK"
    assert classify(error, 0, "valid", "")[0] == "SILENT"
    assert classify(error, 2, "", "error: r.yaml: something else\n")[0] == "WRONG"
    assert classify(error, 2, "", "error: train.epochs\nerror: again\n")[0] == "WRONG"
    warn = bad_inputs.Case("w", "g", [], bad_inputs.WARNING, ["cut off"], code=0)
    assert classify(warn, 0, "", "emoplug: warning: 2 WAVs cut off\n")[0] == "GOOD"
    assert classify(warn, 0, "", "")[0] == "SILENT"
    (tmp_path / "written").mkdir()
    kept = bad_inputs.Case("k", "g", [], bad_inputs.ERROR, ["x"], untouched=str(
        tmp_path / "written"))
    assert classify(kept, 2, "", "error: x\n") == ("WRONG", f"wrote {tmp_path / 'written'}")


def test_a_librosa_warning_names_the_file_once(tmp_path, capsys):
    from emoplug.data import features
    from emoplug.registry import get_registry

    clip = tmp_path / "clip10ms.wav"
    soundfile.write(clip, np.random.default_rng(0).normal(0, .1, 160).astype("float32"), 16000)
    mfcc = get_registry().build("audio", {"type": "mfcc"})
    features._SHOWN.clear()
    features._compute(mfcc, str(clip))
    features._compute(mfcc, str(clip))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emoplug: warning: mfcc on ")
    assert str(clip) in lines[0] and "(10 ms)" in lines[0] and "too large" in lines[0]


def test_an_iemocap_merge_onto_a_label_that_is_not_kept(tmp_path):
    recipe = write(tmp_path / "r.yaml", """
        name: iem
        dataset: {type: iemocap, root: /nowhere, merge: {excited: hapy}}
        text: {bert: {type: bert, tiny: true}}
        grid: {text: [bert], approach: [direct]}
        """)
    one_line(invoke("validate", recipe, "--no-data"), 2, "dataset.merge.excited", "'hapy'",
             "not a kept label")


def test_export_output_under_a_file_stops_before_a_refit(run_copy, tmp_path):
    (tmp_path / "afile").write_text("x")
    for extra in ([], ["--refit"]):
        one_line(invoke("export", run_copy["run"], "--cell", "mfcc/small/direct", *extra,
                        "--output", tmp_path / "afile" / "model"), 2, "--output",
                 "under the file")
    assert not (run_copy["run"] / "exports").exists()


def test_disk_full_writing_a_text_stage_is_one_line_and_records_nothing(tmp_path, monkeypatch):
    from emoplug.train import text_stage

    recipe = write(tmp_path / "staged.yaml", """
        name: staged
        dataset: {type: demo, utterances_per_speaker: 4}
        protocol: {type: kfold, k: 2}
        train: {epochs: 1}
        text: {bert: {type: bert, tiny: true, mode: staged}}
        grid: {text: [bert], approach: [direct]}
        """)
    real = text_stage.write_json_atomic

    def full(path, payload):
        if path.name == "stage.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, payload)

    monkeypatch.setattr(text_stage, "write_json_atomic", full)
    out = tmp_path / "run"
    one_line(invoke("run", recipe, "--output", out, "-q"), 3, "no space left on device",
             "stage.json", "run the same command to resume")
    assert not list(out.glob("stages/*/stage.json")) and not (out / "failures.log").exists()
    assert not list(out.glob("jobs/*/result.json"))  # no job recorded as failed
