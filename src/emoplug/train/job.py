"""Running jobs: one job alone (:func:`run_job`), or a cohort of jobs in lockstep
(:func:`run_cohort`). Each ends as a :class:`~emoplug.train.outcome.JobOutcome`; the runner
writes it to the job's folder (``job_files.py``).
"""

from __future__ import annotations

import time
from typing import Any

from emoplug.recipe import Job, audio_mode
from emoplug.train import audio_stage
from emoplug.train.build import build_model, encoder_lr
from emoplug.train.cohort import RngStreams
from emoplug.train.context import RunContext
from emoplug.train.evaluate import evaluate_job
from emoplug.train.inputs import load_inputs, make_loaders, text_mode
from emoplug.train.loop import CellTrainer, OnBatch, fit, train_cohort
from emoplug.train.outcome import JobOutcome, done, failure
from emoplug.train.selection import inner_folds_of, select_on_inner_folds


def run_job(ctx: RunContext, job: Job, accelerator: Any, ddp: bool = False,
            on_epoch=None, on_batch: OnBatch | None = None) -> JobOutcome:
    """Train and evaluate ``job`` (exceptions propagate to the caller): tuned first when the
    recipe has ``tune:``; under ``dev: inner_folds``, its epochs chosen on inner folds and
    then refitted on the whole training split. A staged speech encoder it reads is
    fine-tuned first if no process has (not counted in the job's timings)."""
    audio_stage.settle_stage(ctx, job, accelerator, ddp=ddp, on_batch=on_batch)
    start = time.perf_counter()
    tuning = None
    if ctx.plan.recipe.tune is not None:
        from emoplug.train.job_files import job_dir
        from emoplug.train.tuning import tune_job

        job, tuning = tune_job(ctx, job, accelerator, job_dir(ctx.output_dir, job))
    tuning_s = time.perf_counter() - start
    inputs = load_inputs(ctx, job, accelerator.device)
    k = inner_folds_of(ctx, job)
    selection = (select_on_inner_folds(ctx, job, inputs, accelerator, k) if k is not None
                 else None)
    if selection is not None:
        inputs.epochs = selection.epochs
    built = build_model(ctx, job, inputs)
    loaders = make_loaders(ctx, job, inputs, built.model.text, accelerator.device)
    setup_s = time.perf_counter() - start - tuning_s
    result = fit(built.model, built.approach.loss, loaders["fit"],
                 None if selection else loaders["dev"], ctx.plan.train_settings(job.cell),
                 accelerator, encoder_lr=encoder_lr(job), ddp=ddp, on_epoch=on_epoch,
                 on_batch=on_batch, epochs=inputs.epochs)
    eval_start = time.perf_counter()
    evaluated = evaluate_job(ctx, job, inputs, built, loaders, result, accelerator, ddp,
                             splits=("test",) if selection else ("dev", "test"))
    if selection is not None:
        evaluated[2]["dev"] = selection.dev
    timings = {"setup_s": setup_s, "train_s": result.seconds,
               "eval_s": time.perf_counter() - eval_start,
               "total_s": time.perf_counter() - start,
               **({"tuning_s": tuning_s} if tuning is not None else {})}
    outcome = done(ctx, job, inputs, built, result, evaluated, timings, accelerator, 1)
    if selection is not None:
        outcome.result["selection"] = selection.record
    if tuning is not None:
        outcome.result["tuning"] = {**tuning, "config": job.cell.config}
    return outcome


def run_cohort(ctx: RunContext, jobs: list[Job], accelerator: Any,
               on_epoch: dict[str, Any], on_batch: OnBatch | None = None
               ) -> dict[str, JobOutcome]:
    """Train the jobs of one cohort (equal ``cohort_key``: the same inputs, no text encoder
    to fine-tune) in lockstep, each on its own random streams, so each result is the one
    ``run_job`` gives. Returns every job's outcome, failures included: a job failing stops
    only itself; a failure of the shared work fails those still running."""
    assert all(text_mode(job) != "finetune" and audio_mode(job.cell.config["audio"])
               != "finetune" for job in jobs), "fine-tuning jobs run alone"
    try:  # the staged speech encoder they read, fine-tuned first if no process has
        audio_stage.settle_stage(ctx, jobs[0], accelerator, on_batch=on_batch)
    except Exception as exc:
        return {job.id: failure(job, exc, 0.0) for job in jobs}
    start = time.perf_counter()
    try:
        inputs = load_inputs(ctx, jobs[0], accelerator.device)
        loaders = make_loaders(ctx, jobs[0], inputs, None, accelerator.device)
    except Exception as exc:
        spent = (time.perf_counter() - start) / len(jobs)
        return {job.id: failure(job, exc, spent) for job in jobs}
    shared_s = (time.perf_counter() - start) / len(jobs)
    outcomes: dict[str, JobOutcome] = {}
    members = []
    for job in jobs:
        built = None
        try:
            built = build_model(ctx, job, inputs)
            rng = RngStreams(accelerator.device)  # the job's streams as they are after building
            settings = ctx.plan.train_settings(job.cell)
            trainer = CellTrainer(built.model, built.approach.loss, settings,
                                  accelerator, len(loaders["fit"]), settings.epochs,
                                  encoder_lr=encoder_lr(job), on_epoch=on_epoch.get(job.id),
                                  rng=rng)
        except Exception as exc:
            outcomes[job.id] = failure(job, exc, shared_s + (built.seconds if built else 0.0))
            continue
        members.append((job, built, rng, trainer))
    try:
        train_cohort([m[3] for m in members], loaders["fit"], loaders["dev"], accelerator.device,
                     on_batch=on_batch)
    except Exception as exc:  # the shared batches failed: every member still training fails
        for job, built, _, trainer in members:
            if trainer.error is None:
                outcomes[job.id] = failure(job, exc, shared_s + built.seconds + trainer.seconds)
        members = [m for m in members if m[3].error is not None]
    for job, built, rng, trainer in members:
        spent = shared_s + built.seconds + trainer.seconds
        if trainer.error is not None:
            outcomes[job.id] = failure(job, trainer.error, spent, trainer.error_traceback)
            continue
        eval_start = time.perf_counter()
        try:
            result = trainer.finish()
            with rng.active(host=True):
                evaluated = evaluate_job(ctx, job, inputs, built, loaders, result,
                                         accelerator)
            eval_s = time.perf_counter() - eval_start
            timings = {"setup_s": shared_s + built.seconds, "train_s": result.seconds,
                       "eval_s": eval_s, "total_s": spent + eval_s}
            outcomes[job.id] = done(ctx, job, inputs, built, result, evaluated, timings,
                                    accelerator, len(jobs))
        except Exception as exc:
            outcomes[job.id] = failure(job, exc, spent + time.perf_counter() - eval_start)
    return outcomes
