"""Tuning a job's settings on dev with Optuna (``tune:`` in a recipe).

Per job (cell, fold, seed) one Optuna study searches the recipe's ``tune.space``. A trial
trains the cell with the trial's settings on the fold's training split and scores it on dev:
the fixed dev split, or with ``dev: inner_folds`` the mean over the inner folds
(:mod:`emoplug.train.selection`). The inputs a trial gets hold no test split, so the test
split never reaches the objective. The job is then trained with the best trial's settings
and scored on test like any job.

Trials are kept in an Optuna journal file beside the job (``jobs/<id>/tuning.journal``), so
an interrupted run resumes its studies: finished trials are kept, and a trial that was
running when its process stopped is marked failed and its settings tried again. A job is
run by one process at a time (its lease), so a study has one writer at a time; any launch
that takes a job over resumes its study.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from emoplug.errors import EmoplugError
from emoplug.recipe import CELL_TRAIN_KEYS, Job, TuneSpec
from emoplug.search_space import apply_values
from emoplug.train.build import build_model, encoder_lr
from emoplug.train.context import RunContext
from emoplug.train.evaluate import evaluate_job
from emoplug.train.inputs import JobInputs, load_inputs, make_loaders
from emoplug.train.loop import TrainingDiverged, fit
from emoplug.train.selection import inner_folds_of, select_on_inner_folds

JOURNAL = "tuning.journal"


def variant(ctx: RunContext, job: Job, values: dict[str, Any]) -> Job:
    """``job`` with its cell's settings replaced by ``values`` (the cell's id stays)."""
    config = apply_values(ctx.registry, job.cell.config, values, CELL_TRAIN_KEYS)
    return dataclasses.replace(job, cell=dataclasses.replace(job.cell, config=config))


def _distributions(spec: TuneSpec, job: Job) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from emoplug.search_space import applies

    out: dict[str, Any] = {}
    for key, dimension in spec.space.items():
        if not applies(key, job.cell.config):
            continue
        if isinstance(dimension, list):
            out[key] = CategoricalDistribution(dimension)
        elif dimension.integer:
            out[key] = IntDistribution(int(dimension.low), int(dimension.high), log=dimension.log)
        else:
            out[key] = FloatDistribution(float(dimension.low), float(dimension.high),
                                         log=dimension.log)
    return out


def _study(spec: TuneSpec, job: Job, folder: Path) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    sampler = (optuna.samplers.TPESampler(seed=job.seed) if spec.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=job.seed))
    pruner = {"none": optuna.pruners.NopPruner(),
              "successive_halving": optuna.pruners.SuccessiveHalvingPruner(),
              "median": optuna.pruners.MedianPruner(n_warmup_steps=1)}[spec.pruner]
    return optuna.create_study(
        study_name=job.id, storage=storage, load_if_exists=True, sampler=sampler,
        pruner=pruner, direction="maximize" if spec.objective == "dev_ua" else "minimize")


def _recover(study: Any) -> int:
    """Trials left running by a stopped process: marked failed, their settings queued to be
    tried again (the retry names the trial it repeats, ``retry_of``). Returns how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return len(stale)


def _finished(study: Any) -> int:
    """Trials that count against the budget: completed, pruned or failed, except those an
    interruption failed (they were queued again)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials} - {None}
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
               and t.number not in retried for t in trials)


def tune_job(ctx: RunContext, job: Job, accelerator: Any,
             folder: Path) -> tuple[Job, dict[str, Any]]:
    """Run (or resume) the job's study in ``folder``; return the job with the best trial's
    settings and the tuning record for ``result.json``."""
    import optuna
    from optuna.trial import TrialState

    spec: TuneSpec = ctx.plan.recipe.tune
    study = _study(spec, job, folder)
    recovered = _recover(study)
    distributions = _distributions(spec, job)
    while _finished(study) < spec.trials:
        trial = study.ask(distributions)
        try:
            value, info = _score(ctx, variant(ctx, job, trial.params), accelerator, spec,
                                 trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except (EmoplugError, TrainingDiverged, RuntimeError) as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}".splitlines()[0])
            study.tell(trial, state=TrialState.FAIL)
            continue
        for key, item in info.items():
            trial.set_user_attr(key, item)
        study.tell(trial, value)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        errors = {t.user_attrs.get("error") for t in study.trials} - {None}
        raise EmoplugError(f"tuning: none of the {spec.trials} trials finished"
                           + (f" (first error: {sorted(errors)[0]})" if errors else
                              " (every trial was pruned)"))
    best = study.best_trial
    record = {
        "objective": spec.objective, "sampler": spec.sampler, "pruner": spec.pruner,
        "trials": [{"number": t.number, "state": t.state.name.lower(), "params": t.params,
                    "value": t.value, **t.user_attrs} for t in study.trials],
        "best_trial": best.number, "best_value": best.value, "chosen": best.params,
        "recovered": recovered}
    return variant(ctx, job, best.params), record


def _score(ctx: RunContext, job: Job, accelerator: Any, spec: TuneSpec,
           trial: Any) -> tuple[float, dict[str, Any]]:
    """Train ``job`` (a trial's variant, its inputs read for its own settings, without the
    test split) and score it on dev or its inner folds; the objective value and what to
    record of the trial."""
    import optuna

    inputs = _without_test(load_inputs(ctx, job, accelerator.device))
    k = inner_folds_of(ctx, job)
    if k is not None:
        seen: list[float] = []

        def on_inner(index: int, dev: dict[str, Any]) -> None:
            seen.append(_objective(spec, dev))
            trial.report(sum(seen) / len(seen), index)
            if trial.should_prune():
                raise optuna.TrialPruned()

        selection = select_on_inner_folds(ctx, job, inputs, accelerator, k, on_inner)
        return (_objective(spec, selection.dev),
                {"dev_ua": selection.dev.get("ua"), "epochs": selection.epochs})

    sign = -1.0 if spec.objective == "dev_ua" else 1.0  # pruners compare in the direction

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        trial.report(sign * record["dev_loss"], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    built = build_model(ctx, job, inputs)
    loaders = make_loaders(ctx, job, inputs, built.model.text, accelerator.device)
    fitted = fit(built.model, built.approach.loss, loaders["fit"], loaders["dev"],
                 ctx.plan.train_settings(job.cell), accelerator, encoder_lr=encoder_lr(job),
                 on_epoch=on_epoch if spec.pruner != "none" else None)
    _, _, metrics = evaluate_job(ctx, job, inputs, built, loaders, fitted, accelerator,
                                 splits=("dev",))
    dev = {**metrics["dev"], "loss": fitted.best_dev_loss}
    return _objective(spec, dev), {"dev_ua": dev.get("ua"), "best_epoch": fitted.best_epoch}


def _without_test(inputs: JobInputs) -> JobInputs:
    """``inputs`` with an empty test split: what every trial gets."""
    return dataclasses.replace(inputs, splits={**inputs.splits, "test": []})


def _objective(spec: TuneSpec, dev: dict[str, Any]) -> float:
    value = dev.get("ua") if spec.objective == "dev_ua" else dev.get("loss")
    if value is None or not math.isfinite(value):
        raise EmoplugError(f"tuning: the dev split gives no {spec.objective}")
    return float(value)
