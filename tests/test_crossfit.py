"""Crossfit: a second stage fitted on out-of-fold outputs from speaker-grouped inner folds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_runner import results, write_recipe

from emoplug import EmoplugError, hookimpl
from emoplug.recipe import Plan, load_plan
from emoplug.registry import get_registry
from emoplug.train import crossfit
from emoplug.train import evaluate as evaluate_module
from emoplug.train.data import Example
from emoplug.train.runner import run_plan
from emoplug_approaches.two_stage import TwoStageApproach

RECIPE = """
name: crossfit
dataset: {type: demo, utterances_per_speaker: 6}
protocol: {type: loso}
seeds: [0]
train: {epochs: 2, batch_size: 16, lr: 3.0e-3, patience: 1}
audio:
  mfcc: {type: mfcc, n_mfcc: 13, hop_ms: 20, encoder: {hidden: 16, stride: 2}}
fusion:
  none: {type: none, hidden: 16}
approach:
  three: {type: recording, mapper_fit_on: crossfit, crossfit_folds: 3}
  many: {type: recording, mapper_fit_on: crossfit, crossfit_folds: 20}
  insample: {type: recording, mapper_fit_on: predicted}
grid: {text: [null], audio: [mfcc], fusion: [none], approach: [three, many, insample]}
"""


def first_fold(plan: Plan) -> Plan:
    plan.jobs = [job for job in plan.jobs if job.fold == plan.folds[0]]
    return plan


class Recording(TwoStageApproach):
    """two_stage, keeping what each ``fit`` received."""

    name = "recording"
    fitted: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def fit(self, train_outputs, train_targets):
        Recording.fitted.append((self.config.mapper_fit_on, train_outputs.clone(),
                                 train_targets.labels.clone()))
        super().fit(train_outputs, train_targets)


class RecordingPlugin:
    @hookimpl
    def emoplug_register_approaches(self, register):
        register(Recording)


def test_speaker_folds_keep_each_speaker_in_one_balanced_fold():
    speakers = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"] * 1
    rng = np.random.default_rng(0)
    speakers = [speakers[i] for i in rng.permutation(len(speakers))]
    folds = crossfit.speaker_folds(speakers, 3)
    assert sorted(i for fold in folds for i in fold) == list(range(len(speakers)))
    owners = [{speakers[i] for i in fold} for fold in folds]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1:])
    assert owners == [{"a"}, {"b", "d"}, {"c", "e"}]  # greedy: largest speaker, lightest fold
    assert crossfit.speaker_folds(speakers, 3) == folds
    assert len(crossfit.speaker_folds(speakers, 9)) == 5  # at most one fold per speaker


def test_inner_seeds_are_reproducible_and_distinct():
    seeds = [crossfit.inner_seed(seed, index) for seed in (0, 1) for index in range(5)]
    assert seeds == [crossfit.inner_seed(seed, index) for seed in (0, 1) for index in range(5)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**32 for s in seeds)


@pytest.mark.parametrize(("speakers", "folds", "message"), [
    (["s1"] * 4, 5, "has 1 speaker\\(s\\); at least 2 are needed"),
    (["s1", "s2"] * 2, 1, "out_of_fold_splits\\(\\) is 1; it must be 0"),
])
def test_crossfit_refuses_what_it_cannot_split(speakers, folds, message):
    examples = [Example(f"u{i}", 0, (1.0, 2.0, 3.0)) for i in range(len(speakers))]
    ctx = SimpleNamespace(by_id={e.id: SimpleNamespace(speaker=s)
                                 for e, s in zip(examples, speakers, strict=True)})
    approach = SimpleNamespace(name="two_stage", out_of_fold_splits=lambda: folds)
    inputs = SimpleNamespace(splits={"train": examples})
    with pytest.raises(EmoplugError, match=message):
        crossfit.out_of_fold_outputs(ctx, SimpleNamespace(fold="Ses01"), inputs, approach, None)


def test_crossfit_fits_the_mapper_on_out_of_fold_outputs_grouped_by_speaker(tmp_path,
                                                                          monkeypatch):
    """Per job: each inner network trains on other speakers than those it predicts, every
    training utterance is predicted once, the mapper is fitted on exactly those predictions
    (not on the in-sample ones), k is capped at the speakers; run alone or in a cohort, the
    results are the same."""
    get_registry().add_plugin(RecordingPlugin(), "recording")
    Recording.fitted = []
    inner: list[list[dict]] = []  # per crossfit job: its inner folds
    out_of_fold: list[tuple] = []
    real_fit, real_predict, real_oof = crossfit.fit, crossfit.predict, \
        crossfit.out_of_fold_outputs

    def spy_oof(ctx, job, inputs, approach, *args):
        inner.append([])
        outputs, record = real_oof(ctx, job, inputs, approach, *args)
        out_of_fold.append((ctx, inputs, outputs, record, approach.config.crossfit_folds))
        return outputs, record

    def spy_fit(model, loss, train, dev, *args, **kwargs):
        inner[-1].append({"train": [e.id for e in train.examples],
                          "dev": [e.id for e in dev.examples]})
        return real_fit(model, loss, train, dev, *args, **kwargs)

    def spy_predict(model, loader, *args):
        inner[-1][-1]["held_out"] = out = real_predict(model, loader, *args)
        return out

    predicted: dict[frozenset, dict[str, torch.Tensor]] = {}  # the jobs' own networks'

    def spy_job_predict(model, loader, *args):
        out = real_job_predict(model, loader, *args)
        predicted[frozenset(out.ids)] = dict(zip(out.ids, out.outputs, strict=True))
        return out

    real_job_predict = evaluate_module.predict
    monkeypatch.setattr(evaluate_module, "predict", spy_job_predict)
    monkeypatch.setattr(crossfit, "out_of_fold_outputs", spy_oof)
    monkeypatch.setattr(crossfit, "fit", spy_fit)
    monkeypatch.setattr(crossfit, "predict", spy_predict)
    recipe = write_recipe(tmp_path, RECIPE)
    summary = run_plan(first_fold(load_plan(recipe)), tmp_path / "cohort", verbosity=0)
    assert len(summary.done) == 3 and not summary.failed
    assert len(out_of_fold) == 2

    for folds, (ctx, inputs, outputs, record, requested) in zip(inner, out_of_fold,
                                                                strict=True):
        train = [e.id for e in inputs.splits["train"]]
        speaker = {i: ctx.by_id[i].speaker for i in train}
        assert record["speakers"] == len(set(speaker.values())) == 8
        assert record["folds"] == len(folds) == min(requested, 8)
        assert len(record["epochs_run"]) == len(record["best_epoch"]) == len(folds)
        assert record["dev_size"] == [len(fold["dev"]) for fold in folds]
        held_out = [i for fold in folds for i in fold["held_out"].ids]
        assert sorted(held_out) == sorted(train)  # every training utterance exactly once
        for fold in folds:
            ids = fold["held_out"].ids
            assert sorted(fold["train"] + ids) == sorted(train)
            assert not {speaker[i] for i in fold["train"]} & {speaker[i] for i in ids}
            # early stopping sees dev utterances of the inner training speakers only
            held_speakers = {speaker[i] for i in ids}
            job_dev = [e.id for e in inputs.splits["dev"]]
            assert fold["dev"] == [i for i in job_dev
                                   if ctx.by_id[i].speaker not in held_speakers]
            rows = [train.index(i) for i in ids]
            assert torch.equal(outputs.outputs[rows], fold["held_out"].outputs)
        assert outputs.ids == train
        # dev: random holds utterances of the held-out speakers, which the inner dev drops
        assert any(len(fold["dev"]) < len(inputs.splits["dev"]) for fold in folds)

    fitted = [f for f in Recording.fitted if f[0] == "crossfit"]
    assert len(fitted) == 2
    for (_, received, labels), (_, inputs, outputs, *_) in zip(fitted, out_of_fold,
                                                                strict=True):
        assert torch.equal(received, outputs.outputs)
        assert labels.tolist() == [e.label for e in inputs.splits["train"]]
    for _, _, outputs, *_ in out_of_fold:  # the insample cell's network is built alike
        in_sample = torch.stack([predicted[frozenset(outputs.ids)][i] for i in outputs.ids])
        assert not torch.allclose(in_sample, outputs.outputs, atol=1e-3)

    run_plan(first_fold(load_plan(recipe, ["train.cohort=1"])), tmp_path / "alone",
             verbosity=0)
    cohort, alone = results(tmp_path / "cohort"), results(tmp_path / "alone")
    assert alone.keys() == cohort.keys()
    assert sorted(r["cohort"] for r in cohort.values()) == [3, 3, 3]
    for job_id, result in alone.items():
        assert result["status"] == "done" and result["cohort"] == 1
        record = result["metrics"].pop("crossfit", None)
        expected = json.loads(json.dumps(cohort[job_id]["metrics"]))
        expected_record = expected.pop("crossfit", None)
        assert (record is None) == (result["names"]["approach"] == "insample")
        if record is not None:
            assert 0 <= record.pop("seconds") and expected_record.pop("seconds") >= 0
            assert record == expected_record
        assert result["metrics"] == expected
        csv = f"jobs/{job_id}/predictions.csv"
        assert (tmp_path / "alone" / csv).read_text() == (tmp_path / "cohort" / csv).read_text()
