"""Learning controls (permuted training labels), the staged text objective, and the chance
floor fields of result.json; plus a learning test: the demo corpus is learnt, a permuted-label
control of the same cell is not."""

from __future__ import annotations

import copy
import csv
import json
import textwrap
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fakes import fake_registry

from emoplug.errors import EmoplugError
from emoplug.recipe import build_plan, load_plan, stable_hash
from emoplug.train import text_stage
from emoplug.train.controls import apply_control, permuted_targets
from emoplug.train.data import Example
from emoplug.train.runner import run_plan

# -- the permutation ---------------------------------------------------------------------------


def _examples(n: int = 40) -> list[Example]:
    return [Example(f"u{i:02d}", i % 4, (1.0 + i % 4, 2.0 + i / 100, 3.0 - i / 100),
                    text=f"text {i}") for i in range(n)]


def test_permuted_targets_move_label_and_avd_together_deterministically():
    examples = _examples()
    permuted = permuted_targets(examples, seed=0, fold="Ses01")
    assert [e.id for e in permuted] == [e.id for e in examples]  # inputs stay in place
    assert [e.text for e in permuted] == [e.text for e in examples]
    pairs = Counter((e.label, e.avd) for e in examples)
    assert Counter((e.label, e.avd) for e in permuted) == pairs  # a true permutation of units
    moved = sum(p.label != e.label for p, e in zip(permuted, examples, strict=True))
    assert moved > len(examples) // 2
    assert [e.avd for e in examples][0] == (1.0, 2.0, 3.0)  # the originals are untouched
    assert permuted == permuted_targets(examples, seed=0, fold="Ses01")
    assert permuted != permuted_targets(examples, seed=1, fold="Ses01")
    assert permuted != permuted_targets(examples, seed=0, fold="Ses02")


def test_apply_control_leaves_ordinary_cells_alone():
    examples = _examples(8)
    assert apply_control(None, examples, 0, "Ses01") == examples
    assert apply_control("permuted_labels", examples, 0, "Ses01") == \
        permuted_targets(examples, 0, "Ses01")
    with pytest.raises(EmoplugError, match="unknown control 'shuffle'"):
        apply_control("shuffle", examples, 0, "Ses01")


# -- recipes, ids and cohorts ------------------------------------------------------------------

AUDIO_ONLY = {"name": "r", "dataset": {"type": "fakedata", "sessions": 2},
              "protocol": {"type": "fakeloso"}, "extra": [{"audio": "mfcc", "approach": "direct"}]}


def test_a_control_is_a_cell_of_its_own_and_other_ids_do_not_change():
    data = copy.deepcopy(AUDIO_ONLY)
    data["extra"].append({"audio": "mfcc", "approach": "direct", "control": "permuted_labels"})
    registry = fake_registry()
    plan = build_plan(data, "r.yaml", registry)
    twin, control = plan.cells
    assert twin.label == "mfcc/none/direct" and twin.control is None
    assert "control" not in twin.config
    assert control.label == "mfcc/none/direct [permuted labels]"
    assert control.control == "permuted_labels" and control.id != twin.id
    # the ids emoplug gave this cell before controls existed: finished runs stay finished
    components = {"text": None, **{kind: registry.validate(kind, {"type": name}) for kind, name
                                   in (("audio", "mfcc"), ("fusion", "none"),
                                       ("approach", "direct"))}}
    assert [j.id for j in plan.jobs if j.cell is twin] == [
        stable_hash({**plan.shared_config, **components, "fold": fold, "seed": 0})
        for fold in ("S1", "S2")]
    job = next(j for j in plan.jobs if j.cell is control)
    assert job.resolved_config()["control"] == "permuted_labels"
    assert job.resolved_config()["cell_label"].endswith("[permuted labels]")


def test_a_control_never_shares_a_cohort_with_its_twin():
    from emoplug.train.cohort import cohort_key

    data = copy.deepcopy(AUDIO_ONLY)
    data["extra"].append({"audio": "mfcc", "approach": "direct", "control": "permuted_labels"})
    plan = build_plan(data, "r.yaml", fake_registry())
    twin, control = (next(j for j in plan.jobs if j.cell is c and j.fold == "S1")
                     for c in plan.cells)
    assert cohort_key(twin, lambda job: None) != cohort_key(control, lambda job: None)


def test_stage_ids_gain_the_control_only_when_there_is_one():
    ctx = SimpleNamespace(plan=SimpleNamespace(shared_config={"dataset": {"type": "demo"}}))
    text = {"type": "bert", "mode": "staged"}
    plain = text_stage.stage_id(ctx, text, "Ses01", 0)
    assert plain == stable_hash({"dataset": {"type": "demo"}, "text": text, "fold": "Ses01",
                                 "seed": 0, "stage": "text"})  # as before controls existed
    assert text_stage.stage_id(ctx, text, "Ses01", 0, "permuted_labels") != plain


def test_an_unknown_control_is_a_recipe_error():
    from emoplug.errors import RecipeError

    data = copy.deepcopy(AUDIO_ONLY)
    data["extra"][0]["control"] = "shuffled"
    with pytest.raises(RecipeError, match=r"extra\[0\]\.control"):
        build_plan(data, "r.yaml", fake_registry())


# -- the staged objective ----------------------------------------------------------------------


def test_stage_objectives_train_different_heads():
    train = _examples()
    outputs = torch.randn(len(train), 7)
    targets = SimpleNamespace(labels=torch.tensor([e.label for e in train]),
                              avd=torch.tensor([e.avd for e in train]))
    losses = {name: text_stage.stage_loss(name, 4, train, "stage") for name in
              ("multitask", "category", "avd")}
    assert {k: v.out_dim for k, v in losses.items()} == {"multitask": 7, "category": 4, "avd": 3}
    category = losses["category"](outputs[:, :4], targets)
    avd = losses["avd"](outputs[:, 4:], targets)
    assert category.item() == pytest.approx(torch.nn.functional.cross_entropy(
        outputs[:, :4], targets.labels).item(), rel=1e-6)
    assert losses["multitask"](outputs, targets).item() == pytest.approx(
        category.item() + avd.item(), rel=1e-6)


def test_the_avd_objective_needs_avd_targets():
    no_avd = [Example(e.id, e.label, (np.nan,) * 3) for e in _examples()]
    with pytest.raises(EmoplugError, match="stage_objective 'avd' needs valence/arousal/"
                                           "dominance targets, and the training fold has none"):
        text_stage.stage_loss("avd", 4, no_avd, "text stage bert fold=Ses01")
    assert text_stage.stage_loss("multitask", 4, no_avd, "stage").out_dim == 4


TINY = """
name: tiny
dataset: {type: demo, utterances_per_speaker: 6}
protocol: {type: loso}
seeds: [0]
train: {epochs: 2, batch_size: 16, lr: 3.0e-3, patience: 1}
text:
  bert: {type: bert, tiny: true, mode: staged, lr: 1.0e-3}
audio:
  mfcc: {type: mfcc, n_mfcc: 13, hop_ms: 20, encoder: {hidden: 16, stride: 2}}
fusion:
  early: {type: early, hidden: 16}
grid: {text: [bert], audio: [mfcc], fusion: [early], approach: [direct]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text) + f"cache_dir: {tmp_path / 'cache'}\n")
    return path


@pytest.mark.parametrize("objective", ["category", "avd"])
def test_the_stage_objective_is_trained_and_recorded(tmp_path, objective):
    from accelerate import Accelerator

    from emoplug.train.context import RunContext

    recipe = _write(tmp_path, TINY)
    plan = load_plan(recipe, [f"text.bert.stage_objective={objective}"])
    ctx = RunContext(plan, tmp_path / "out")
    text = plan.cells[0].config["text"]
    assert text["stage_objective"] == objective
    info = text_stage.run_text_stage(ctx, text, "Ses01", 0, Accelerator(mixed_precision="no"))
    sid = text_stage.stage_id(ctx, text, "Ses01", 0)
    saved = json.loads((tmp_path / "out" / "stages" / sid / "stage.json").read_text())
    assert saved["objective"] == info["objective"] == objective and saved["control"] is None
    assert saved["head_outputs"] == {"category": 4, "avd": 3}[objective]


# -- a run with a control cell -----------------------------------------------------------------

CONTROLLED = TINY.replace("{type: loso}", "{type: kfold, k: 2}") + """extra:
  - {text: bert, audio: mfcc, fusion: early, approach: direct, control: permuted_labels}
"""


def _gold_column(folder: Path) -> list[tuple[str, str]]:
    with open(folder / "predictions.csv") as f:
        return [(row["id"], row["gold"]) for row in csv.DictReader(f)]


def test_a_control_cell_trains_on_permuted_targets_and_is_scored_on_gold(tmp_path,
                                                                         monkeypatch):
    from emoplug.train.context import RunContext
    from emoplug.train.inputs import load_inputs

    stage_targets: list[list[tuple[str, int]]] = []
    original_fit = text_stage.fit

    def spy(model, loss, train, *args, **kwargs):
        stage_targets.append([(e.id, e.label) for e in train.examples])
        return original_fit(model, loss, train, *args, **kwargs)

    monkeypatch.setattr(text_stage, "fit", spy)
    recipe = _write(tmp_path, CONTROLLED)
    plan = load_plan(recipe)
    out = tmp_path / "out"
    summary = run_plan(plan, out, verbosity=0)
    assert len(summary.done) == 4 and not summary.failed
    assert summary.stages == 4  # the control fine-tunes its own text stage per fold
    twin, control = plan.cells
    assert control.control == "permuted_labels" and twin.control is None
    ctx = RunContext(plan, out)
    fold = ctx.folds[plan.folds[0]]
    gold = {i: ctx.labels.index(ctx.by_id[i].label) for i in fold.train}
    stages = [sorted(t) for t in stage_targets if {i for i, _ in t} == set(fold.train)]
    assert sorted(t == sorted(gold.items()) for t in stages) == [False, True]  # one permuted
    for fold_name in plan.folds:
        jobs = {j.cell.id: j for j in plan.jobs if j.fold == fold_name}
        plain, permuted = jobs[twin.id], jobs[control.id]
        result = {j.id: json.loads((out / "jobs" / j.id / "result.json").read_text())
                  for j in (plain, permuted)}
        assert result[permuted.id]["control"] == "permuted_labels"
        assert result[plain.id]["control"] is None
        assert result[permuted.id]["stage"] != result[plain.id]["stage"]
        assert result[permuted.id]["stage"] == text_stage.job_stage_id(ctx, permuted)
        stage_info = json.loads((out / "stages" / result[permuted.id]["stage"] /
                                 "stage.json").read_text())
        assert stage_info["control"] == "permuted_labels"
        assert stage_info["objective"] == "multitask"
        for r in result.values():  # what the report's chance floors are made of
            assert r["avd_scale"] == [1.0, 5.0]
            assert {s: sum(c) for s, c in r["label_counts"].items()} == r["sizes"]
            assert all(len(c) == 4 for c in r["label_counts"].values())
        assert result[permuted.id]["label_counts"] == result[plain.id]["label_counts"]
        assert _gold_column(out / "jobs" / permuted.id) == _gold_column(out / "jobs" / plain.id)
        splits = {j.id: load_inputs(ctx, j, torch.device("cpu")).splits
                  for j in (plain, permuted)}
        mine, gold_train = splits[permuted.id]["train"], splits[plain.id]["train"]
        assert [e.id for e in mine] == [e.id for e in gold_train]
        assert [e.label for e in mine] != [e.label for e in gold_train]
        assert sorted((e.label, e.avd) for e in mine) == \
            sorted((e.label, e.avd) for e in gold_train)
        for split in ("dev", "test"):
            assert [(e.id, e.label, e.avd) for e in splits[permuted.id][split]] == \
                [(e.id, e.label, e.avd) for e in splits[plain.id][split]]


# -- learning test -----------------------------------------------------------------------------

LEARNING = """
name: learning
dataset: {type: demo}
protocol: {type: loso, dev: random, dev_fraction: 0.2}
seeds: [0]
train: {epochs: 10, batch_size: 32, lr: 2.0e-3, patience: 2}
text:
  bert: {type: bert, tiny: true, mode: staged, lr: 1.0e-3}
audio:
  mfcc: {type: mfcc, n_mfcc: 40, hop_ms: 20, encoder: {hidden: 64, stride: 2}}
fusion:
  early: {type: early, hidden: 64}
  attention: {type: attention, dim: 64, heads: 4, hidden: 64}
approach:
  direct: {type: direct}
grid: {text: [bert], audio: [mfcc], fusion: [early, attention], approach: [direct]}
extra:
  - {text: bert, audio: mfcc, fusion: early, approach: direct, control: permuted_labels}
  - {text: bert, audio: mfcc, fusion: attention, approach: direct, control: permuted_labels}
"""


@pytest.fixture
def one_thread():
    """Tiny models train as fast on one thread; with two, a machine whose cores are busy with
    other work slowed this test tenfold (threads waiting on each other). Same results."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_demo_corpus_is_learnt_and_its_permuted_label_control_is_not(tmp_path,
                                                                          one_thread):
    """The best multimodal cell, chosen on dev UA, scores well on test; the permuted-label
    control of that same cell stays near chance (0.25 UA for four classes)."""
    plan = load_plan(_write(tmp_path, LEARNING))
    summary = run_plan(plan, tmp_path / "out", verbosity=0)
    assert len(summary.done) == 20 and not summary.failed
    by_cell: dict[str, list[dict]] = {}
    for path in (tmp_path / "out").glob("jobs/*/result.json"):
        result = json.loads(path.read_text())
        by_cell.setdefault(result["cell"], []).append(result)
    cells = {c.id: c for c in plan.cells}

    def mean(cell_id: str, split: str) -> float:
        return float(np.mean([r["metrics"][split]["ua"] for r in by_cell[cell_id]]))

    plain = [c for c in plan.cells if c.control is None]
    best = max(plain, key=lambda c: mean(c.id, "dev"))
    control = next(c for c in cells.values() if c.control == "permuted_labels"
                   and c.label == f"{best.label} [permuted labels]")
    assert mean(best.id, "test") >= 0.60, {c.label: mean(c.id, "test") for c in plain}
    assert mean(control.id, "test") <= 0.35
