"""Saved models: train with ``train.save: best``, reload in a fresh process, export, refit."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import emoplug
from emoplug.cli import main

RECIPE = """
name: predict-test
dataset: {type: demo, utterances_per_speaker: 4}
protocol: {type: loso, dev: random, dev_fraction: 0.2}
seeds: [0]
cache_dir: CACHE
train: {epochs: 2, stage_epochs: 2, batch_size: 16, lr: 3.0e-3, patience: 2, save: best}
text:
  staged: {type: bert, tiny: true, mode: staged, lr: 1.0e-3, tiny_layers: 1, tiny_vocab: 100}
  tuned: {type: bert, tiny: true, mode: finetune, lr: 1.0e-3, tiny_layers: 1, tiny_vocab: 100}
audio:
  mfcc: {type: mfcc, n_mfcc: 13, n_mels: 26, encoder: {hidden: 16, layers: 1, stride: 2}}
fusion:
  early: {type: early, hidden: 16}
  none: {type: none, hidden: 16}
approach:
  direct: {type: direct}
  two_stage: {type: two_stage}
extra:
  - {text: staged, audio: mfcc, fusion: early, approach: two_stage}
  - {text: tuned, fusion: none, approach: direct}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run: the staged+mfcc two-stage cell on fold Ses01, the text-only direct cell
    (fine-tuned encoder) on folds Ses01 and Ses02."""
    from emoplug.recipe import load_plan
    from emoplug.train.runner import run_plan

    root = tmp_path_factory.mktemp("predict")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.replace("CACHE", str(root / "cache")))
    plan = load_plan(recipe)
    two_stage, direct = plan.cells
    plan.jobs = [j for j in plan.jobs if j.fold == "Ses01"
                 or (j.cell is direct and j.fold == "Ses02")]
    summary = run_plan(plan, root / "run", verbosity=-1)
    assert summary.failed == [] and len(summary.done) == 3
    jobs = {(j.cell.id, j.fold): root / "run" / "jobs" / j.id for j in plan.jobs}
    from emoplug.data.loading import load_corpus_and_folds

    corpus, _ = load_corpus_and_folds(plan.corpus_request())
    # the tiny encoders were built into the cache: saved models must not need them
    shutil.rmtree(root / "cache" / "models")
    return {"root": root, "run": root / "run", "plan": plan, "corpus": corpus.by_id(),
            "two_stage": jobs[(two_stage.id, "Ses01")], "direct": jobs[(direct.id, "Ses01")],
            "direct2": jobs[(direct.id, "Ses02")], "direct_cell": direct.id}


def _manifest(run, job: Path, path: Path) -> list[dict[str, str]]:
    """A manifest of the job's test utterances; returns its predictions.csv rows."""
    rows = list(csv.DictReader(open(job / "predictions.csv")))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "audio", "text"])
        for row in rows:
            utt = run["corpus"][row["id"]]
            writer.writerow([utt.id, utt.audio, utt.text])
    return rows


def _same_as_job(expected: list[dict[str, str]], predicted: list[dict], avd: bool) -> None:
    assert [p["id"] for p in predicted] == [r["id"] for r in expected]
    for row, pred in zip(expected, predicted, strict=True):
        assert pred["category"] == row["predicted"]
        for label, p in pred["probabilities"].items():
            assert p == pytest.approx(float(row[f"p_{label}"]), abs=1e-5)
        if avd:
            for name, value in pred["avd"].items():
                assert value == pytest.approx(float(row[f"pred_{name}"]), abs=1e-5)
        else:
            assert pred["avd"] is None


def test_saved_folder_is_self_contained_json_and_safetensors(run):
    model = run["two_stage"] / "model"
    manifest = json.loads((model / "model.json").read_text())
    assert manifest["format_version"] == "1.0" and manifest["text_mode"] == "staged"
    assert manifest["labels"] == ["neutral", "happy", "angry", "sad"]
    assert manifest["approach_state"]["mapper"]["kind"] == "logistic"
    assert manifest["config"]["fold"] == "Ses01"
    files = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    assert {"model.json", "model.safetensors", "text/config.json",
            "text/model.safetensors", "text/tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]


def test_fresh_process_predictions_match_the_job(run, tmp_path):
    """The staged-text + mfcc two-stage model, loaded by ``emoplug predict`` in a new
    process, reproduces the job's test predictions (category, probabilities, AVD)."""
    expected = _manifest(run, run["two_stage"], tmp_path / "m.csv")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", "from emoplug.cli import main; main()", "predict",
         str(run["two_stage"] / "model"), "--manifest", str(tmp_path / "m.csv"), "--json",
         "--device", "cpu"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _same_as_job(expected, json.loads(proc.stdout), avd=True)


def test_direct_model_predictions_match_the_job(run, tmp_path):
    """The text-only direct model (fine-tuned encoder inside the cell)."""
    expected = _manifest(run, run["direct"], tmp_path / "m.csv")
    result = CliRunner().invoke(main, ["predict", str(run["direct"] / "model"), "--manifest",
                                       str(tmp_path / "m.csv"), "--json"])
    assert result.exit_code == 0, result.output
    _same_as_job(expected, json.loads(result.stdout), avd=False)


def test_cli_prints_category_probabilities_and_avd_like_the_python_api(run):
    utt = next(iter(run["corpus"].values()))
    model = run["two_stage"] / "model"
    result = CliRunner().invoke(main, ["predict", str(model), "--audio", utt.audio,
                                       "--text", utt.text])
    assert result.exit_code == 0, result.output
    answer = emoplug.load(model).predict(audio=utt.audio, text=utt.text)
    lines = result.stdout.splitlines()
    assert lines[0] == f"category: {answer['category']}"
    assert lines[1].startswith("probabilities: ") and "valence=" in lines[2]
    assert set(answer["probabilities"]) == {"neutral", "happy", "angry", "sad"}
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
    assert set(answer["avd"]) == {"valence", "arousal", "dominance"}


def _one_line_error(args: list[str], *words: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]


def test_bad_single_inputs_are_one_line_errors(run, tmp_path):
    utt = next(iter(run["corpus"].values()))
    both, text_only = str(run["two_stage"] / "model"), str(run["direct"] / "model")
    _one_line_error(["predict", both, "--audio", str(tmp_path / "nope.wav"), "--text", "hi"],
                    "not found")
    garbage = tmp_path / "garbage.wav"
    garbage.write_text("not audio")
    _one_line_error(["predict", both, "--audio", str(garbage), "--text", "hi"], "cannot read")
    _one_line_error(["predict", both, "--text", "hi"], "reads audio")
    _one_line_error(["predict", both, "--audio", utt.audio], "reads text")
    _one_line_error(["predict", text_only, "--audio", utt.audio], "reads text")
    _one_line_error(["predict", str(tmp_path), "--text", "hi"], "no model.json")
    with pytest.raises(emoplug.EmoplugError, match="reads text"):
        emoplug.load(text_only).predict(text="  ")


def test_manifest_skips_bad_rows_and_predicts_the_rest(run, tmp_path):
    good = list(run["corpus"].values())[:3]
    manifest = tmp_path / "m.csv"
    (tmp_path / "broken.wav").write_bytes(b"RIFF....")
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "audio", "text"])
        writer.writerow(["missing", "nope.wav", "hello"])
        for utt in good:
            writer.writerow([utt.id, utt.audio, utt.text])
        writer.writerow(["broken", "broken.wav", "hello"])  # relative to the manifest
        writer.writerow(["no-text", good[0].audio, ""])
    result = CliRunner().invoke(main, ["predict", str(run["two_stage"] / "model"),
                                       "--manifest", str(manifest), "--json"])
    assert result.exit_code == 0, result.output
    assert [p["id"] for p in json.loads(result.stdout)] == [u.id for u in good]
    report = [line for line in result.stderr.splitlines() if line.startswith("emoplug:")]
    assert len(report) == 1 and "3 of 6 rows" in report[0]
    assert "missing: audio file" in report[0] and "broken: cannot read" in report[0]


def test_newer_format_and_pickles_are_refused(run, tmp_path):
    from emoplug.files import link_or_copy_tree

    copy = tmp_path / "model"
    link_or_copy_tree(run["direct"] / "model", copy)
    manifest = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**manifest, "format_version": "2.0"}))
    _one_line_error(["predict", str(copy), "--text", "hi"], "format 2.0", "upgrade")
    (copy / "model.json").write_text(json.dumps(manifest))
    assert emoplug.load(copy).predict(text="hi")["category"] in manifest["labels"]
    (copy / "text" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(emoplug.EmoplugError, match="pickle"):
        emoplug.load(copy)
    (copy / "text" / "pytorch_model.bin").unlink()
    outside = tmp_path / "outside"
    outside.mkdir()
    (copy / "extra").symlink_to(outside, target_is_directory=True)
    with pytest.raises(emoplug.EmoplugError, match="leaves the model folder"):
        emoplug.load(copy)


@pytest.mark.parametrize("damage, weights", [
    ("truncated", "model.safetensors"), ("garbage", "model.safetensors"),
    ("truncated", "text/model.safetensors"),  # the fine-tuned text transformer
])
def test_damaged_weights_are_one_line_naming_the_file(run, tmp_path, damage, weights):
    copy = tmp_path / "model"
    shutil.copytree(run["direct"] / "model", copy)  # a real copy: saved weights are linked
    path = copy / weights
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not weights")
    # the network's weights are named as a file; the transformer's as its checkpoint folder
    named = path if weights == "model.safetensors" else path.parent
    _one_line_error(["predict", str(copy), "--text", "hi"], f"error: {named}")


def test_export_fold_and_ensemble(run, tmp_path):
    from emoplug.export import export_saved
    from emoplug.predict import load_model

    cell = run["direct_cell"]
    result = CliRunner().invoke(main, ["export", str(run["run"]), "--cell", cell[:6],
                                       "--fold", "Ses02", "--output", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    assert (json.loads((tmp_path / "one" / "model.json").read_text())["fold"] == "Ses02")
    ensemble = export_saved(run["run"], cell, "all", tmp_path / "all")
    text = "I am so happy"
    probs = [load_model(run[n] / "model").predict(text=text)["probabilities"]
             for n in ("direct", "direct2")]
    mean = load_model(ensemble).predict(text=text)["probabilities"]
    for label in mean:
        assert mean[label] == pytest.approx((probs[0][label] + probs[1][label]) / 2)
    _one_line_error(["export", str(run["run"]), "--cell", "staged+mfcc/early/two_stage",
                     "--fold", "Ses02"], "no job")
    _one_line_error(["export", str(run["run"]), "--cell", "zzz"], "is no cell")


def test_refit_checks_device_inputs_before_training(run, monkeypatch):
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "yes")
    _one_line_error(["export", str(run["run"]), "--cell", run["direct_cell"], "--refit"],
                    "EMOPLUG_DEVICE_INPUTS='yes' is not one of auto, on, off")


def test_export_without_saved_models_says_how_to_get_them(tmp_path):
    job = {"id": "j1", "cell": "c1", "label": "bert/none/direct", "fold": "F1", "seed": 0}
    (tmp_path / "plan.json").write_text(json.dumps({"folds": ["F1"], "jobs": [job]}))
    (tmp_path / "jobs" / "j1").mkdir(parents=True)
    (tmp_path / "jobs" / "j1" / "result.json").write_text(json.dumps({"status": "done"}))
    _one_line_error(["export", str(tmp_path), "--cell", "c1"], "no saved model",
                    "train.save=best", "--refit")


def test_refit_fold_is_seeded_stratified_and_disjoint():
    from emoplug.export import refit_fold

    ids = [f"u{i:02d}" for i in range(40)]
    labels = {u: "ab"[i % 2] for i, u in enumerate(ids)}
    fold = refit_fold(ids, labels, 0.25, seed=3)
    assert len(fold.dev) == 10 and sum(labels[u] == "a" for u in fold.dev) == 5
    assert set(fold.train) | set(fold.dev) == set(ids) and not set(fold.train) & set(fold.dev)
    assert fold.test == fold.dev and refit_fold(ids, labels, 0.25, seed=3) == fold
    assert refit_fold(ids, labels, 0.25, seed=4).dev != fold.dev


def test_refit_trains_on_all_data_and_saves(run, tmp_path):
    from emoplug.export import refit

    folder, result = refit(run["run"], run["direct_cell"], tmp_path / "refit", seed=1,
                           dev_fraction=0.2)
    assert result["sizes"]["train"] + result["sizes"]["dev"] == len(run["corpus"])
    assert result["sizes"]["dev"] == result["sizes"]["test"] == 8  # 20% of each label's 10
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["fold"] == "refit" and manifest["seed"] == 1
    assert emoplug.load(folder).predict(text="so sad")["category"] in manifest["labels"]


CHARBAG = '''
"""A text encoder that is not a Hugging Face model: bag of character embeddings."""
import torch
from torch import nn

from emoplug import Encoded, TextEncoder, TextEncoderConfig, hookimpl


class CharBagConfig(TextEncoderConfig):
    pretrained: str = "none"
    dim: int = 16
    buckets: int = 64


class CharBagModule(nn.Module):
    def __init__(self, buckets, dim):
        super().__init__()
        self.buckets, self.dim = buckets, dim
        self.embed = nn.Embedding(buckets + 1, dim, padding_idx=0)

    def tokenize(self, texts):
        ids = [[1 + ord(c) % self.buckets for c in t.lower()][:64] or [1] for t in texts]
        width = max(map(len, ids))
        input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
        return {"input_ids": input_ids, "attention_mask": input_ids > 0}

    def forward(self, input_ids, attention_mask):
        sequence, mask = self.embed(input_ids), attention_mask.bool()
        pooled = (sequence * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return Encoded(sequence, mask, pooled)


class CharBag(TextEncoder):
    name = "charbag"
    Config = CharBagConfig

    def build(self, *, texts, work_dir):
        return CharBagModule(self.config.buckets, self.config.dim)


@hookimpl
def emoplug_register_text_encoders(register):
    register(CharBag)
'''


def test_a_text_encoder_that_is_not_hugging_face_is_saved_and_predicts_in_a_fresh_process(
        tmp_path, monkeypatch):
    """Saving and loading are the text encoder's contract (``TextEncoder.save``/``load``,
    here the defaults): a third-party encoder trained in a cell is saved with the model and
    ``emoplug predict`` in a new process gives the job's predictions."""
    from emoplug.recipe import build_plan
    from emoplug.testing import TINY_DEMO
    from emoplug.train.runner import run_plan

    site = tmp_path / "site"
    info = site / "emoplug_charbag-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: emoplug-charbag\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[emoplug]\ncharbag = charbag_plugin\n")
    (site / "charbag_plugin.py").write_text(CHARBAG)
    monkeypatch.syspath_prepend(str(site))  # an installed plugin, found by its entry point
    plan = build_plan({
        "name": "charbag", "dataset": TINY_DEMO, "protocol": {"type": "loso"},
        "seeds": [0], "cache_dir": str(tmp_path / "cache"),
        "train": {"epochs": 2, "batch_size": 16, "patience": 1, "save": "best"},
        "text": {"chars": {"type": "charbag", "mode": "finetune"}},
        "fusion": {"none": {"type": "none", "hidden": 16}},
        "approach": {"direct": {"type": "direct"}},
        "grid": {"text": ["chars"], "audio": [None], "fusion": ["none"],
                 "approach": ["direct"]}})
    plan.jobs = plan.jobs[:1]
    summary = run_plan(plan, tmp_path / "run", verbosity=-1)
    assert summary.failed == [] and len(summary.done) == 1
    job = tmp_path / "run" / "jobs" / plan.jobs[0].id
    assert sorted(p.name for p in (job / "model" / "text").iterdir()) == ["weights.safetensors"]

    from emoplug.data.loading import load_corpus_and_folds

    corpus = load_corpus_and_folds(plan.corpus_request())[0].by_id()
    expected = _manifest({"corpus": corpus}, job, tmp_path / "m.csv")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-m", "emoplug", "predict", str(job / "model"), "--manifest",
         str(tmp_path / "m.csv"), "--json", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _same_as_job(expected, json.loads(proc.stdout), avd=False)
