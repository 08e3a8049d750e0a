"""Tuning on dev with Optuna and nested selection on inner folds (issue 28, part 3)."""

from __future__ import annotations

import json

import pytest

from emoplug.recipe import build_plan

pytestmark = pytest.mark.slow

DEMO = {"type": "demo", "utterances_per_speaker": 8}


def recipe(*, tune: dict | None = None, dev: str = "session", lr: float = 1e-3) -> dict:
    data = {
        "name": "tuned", "dataset": DEMO, "protocol": {"type": "loso", "dev": dev},
        "seeds": [0], "train": {"epochs": 6, "batch_size": 16, "lr": lr, "patience": 3},
        "audio": {"stats": {"type": "mfcc", "n_mfcc": 13, "deltas": 1, "level": "functionals",
                            "encoder": {"type": "mlp", "hidden": 32, "layers": 1}}},
        "fusion": {"head": {"type": "none", "hidden": 0}},
        "extra": [{"audio": "stats", "fusion": "head", "approach": "direct"}],
    }
    if tune is not None:
        data["tune"] = tune
    return data


LR_SEARCH = {"trials": 3, "sampler": "random", "pruner": "none",
             "space": {"train.lr": {"low": 3e-3, "high": 3e-2, "log": True}}}


def _spy_on_loaders(monkeypatch) -> list[str]:
    """Every utterance id that reaches a loader built while tuning or selecting."""
    import emoplug.train.selection as selection
    import emoplug.train.tuning as tuning

    seen: list[str] = []
    for module in (tuning, selection):
        original = module.make_loaders

        def spy(ctx, job, inputs, text_module, device, original=original):
            seen.extend(e.id for split in inputs.splits.values() for e in split)
            return original(ctx, job, inputs, text_module, device)
        monkeypatch.setattr(module, "make_loaders", spy)
    return seen


def test_tuning_finds_a_better_learning_rate_than_a_far_off_default(run_recipe, tmp_path):
    far_off = run_recipe(recipe(lr=1e-7), folds=2)
    tuned = run_recipe(recipe(lr=1e-7, tune=LR_SEARCH), folds=2)

    def mean(results, split):
        return sum(r["metrics"][split]["ua"] for r in results) / len(results)

    assert mean(tuned, "dev") > mean(far_off, "dev") + 0.1
    assert mean(tuned, "test") > mean(far_off, "test") + 0.1
    for result in tuned:
        record = result["tuning"]
        assert len(record["trials"]) == 3
        assert all(t["state"] == "complete" for t in record["trials"])
        assert 3e-3 <= record["chosen"]["train.lr"] <= 3e-2
        best = max(record["trials"], key=lambda t: t["value"])
        assert record["best_trial"] == best["number"]
        assert record["config"]["train"]["lr"] == record["chosen"]["train.lr"]
    from emoplug.report import write_report

    written = write_report(tmp_path / "run-1", formats=("md",))
    tuning = written["md"].read_text().split("## Tuning")[1].split("\n## ")[0]
    for result in tuned:
        assert f"| stats/head/direct | {result['fold']} | 0 | train.lr=" \
               f"{result['tuning']['chosen']['train.lr']:.3g} |" in tuning
    assert (written["md"].parent / "figures" / "tuning.png").exists()


def test_the_test_split_never_reaches_a_trial(run_recipe, monkeypatch):
    seen = _spy_on_loaders(monkeypatch)
    (result,) = run_recipe(recipe(tune={**LR_SEARCH, "trials": 2}), folds=1)
    plan = build_plan(recipe())
    from emoplug.data.loading import load_corpus_and_folds

    _, folds = load_corpus_and_folds(plan.corpus_request(), warn=False)
    test = set(next(f for f in folds if f.name == result["fold"]).test)
    assert seen and not test & set(seen)


def test_inner_folds_are_speaker_disjoint_and_never_touch_test(run_recipe, monkeypatch):
    seen = _spy_on_loaders(monkeypatch)
    (result,) = run_recipe(recipe(dev="inner_folds"), folds=1)
    selection = result["selection"]
    assert selection["k"] == 3 and len(selection["held_out_speakers"]) == 3
    held = [s for fold in selection["held_out_speakers"] for s in fold]
    assert len(held) == len(set(held))  # each training speaker held out once
    plan = build_plan(recipe(dev="inner_folds"))
    from emoplug.data.loading import load_corpus_and_folds

    corpus, folds = load_corpus_and_folds(plan.corpus_request(), warn=False)
    fold = next(f for f in folds if f.name == result["fold"])
    by_id = corpus.by_id()
    assert fold.dev == ()
    assert set(held) == {by_id[i].speaker for i in fold.train}
    assert not set(held) & {by_id[i].speaker for i in fold.test}
    assert seen and not set(fold.test) & set(seen)
    assert result["stopping"]["stopped_by"] == "fixed_epochs"
    assert result["epochs_run"] == selection["epochs"]
    assert result["metrics"]["dev"]["inner_folds"] == 3


def test_an_interrupted_study_resumes_its_trials(run_recipe, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    data = recipe(tune={**LR_SEARCH, "trials": 3})
    plan = build_plan(data)
    job = next(j for j in plan.jobs if j.fold == plan.folds[0])
    folder = tmp_path / "run-0" / "jobs" / job.id
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=job.id, direction="maximize", storage=JournalStorage(
        JournalFileBackend(str(folder / "tuning.journal"))))
    dist = {"train.lr": optuna.distributions.FloatDistribution(3e-3, 3e-2, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"train.lr": 0.01}, distributions=dist,
                                              value=0.123))
    study.ask(dist)  # left running: its process was stopped
    (result,) = run_recipe(data, folds=1)
    trials = result["tuning"]["trials"]
    assert result["tuning"]["recovered"] == 1
    assert trials[0]["value"] == 0.123 and trials[0]["state"] == "complete"  # kept, not re-run
    assert trials[1]["state"] == "fail"
    assert trials[2]["retry_of"] == 1 and trials[2]["params"] == trials[1]["params"]
    assert len(trials) == 4  # three finished trials counted: the completed, the failed, two new


def test_the_plan_counts_trials_and_trainings():
    plain = build_plan(recipe()).size()
    tuned = build_plan(recipe(tune=LR_SEARCH, dev="inner_folds")).size()
    jobs = plain["head_jobs"]
    assert plain["tuning_trials"] == 0 and plain["trainings"] == jobs
    assert tuned["tuning_trials"] == 3 * jobs
    assert tuned["trainings"] == jobs * (3 * 3 + 3 + 1)


def test_a_tuned_setting_must_be_one_the_component_accepts():
    from emoplug.errors import RecipeError

    for space, message in [
            ({"audio.encoder.hidden": [16, -4]}, "tune.space.audio.encoder.hidden: -4"),
            ({"fusion.nope": [1, 2]}, "tune.space.fusion.nope"),
            ({"train.strategy": ["jobs"]}, "tune.space.train.strategy: not a training"),
            ({"text.lr": [1e-5]}, "tune.space.text.lr: no cell has a text component")]:
        with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
            build_plan(recipe(tune={"space": space}))
    json.dumps(build_plan(recipe(tune=LR_SEARCH)).shared_config)  # recorded in config.json
