"""``emoplug run``: plan -> feature cache -> text stages -> head jobs, resumable and sharded.

Under ``accelerate launch --num_processes N`` (or ``emoplug run --workers N``, ``workers.py``)
every process runs :func:`run_plan`. With ``train.strategy: jobs`` (default) processes *claim*
units of work (a text stage or a job, ``claims.py``), so a process that finishes early takes
more work instead of idling, and processes on several nodes can share one output folder. With
``train.strategy: ddp`` all processes run every job together, data-parallel. A finished job
(its ``result.json`` says ``done``) is never run again; a failed one is retried on the next run.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoplug.data.loading import data_record
from emoplug.errors import EmoplugError
from emoplug.files import read_json, write_json_atomic
from emoplug.recipe import Job, Plan
from emoplug.train import text_stage
from emoplug.train.claims import Claims, launch_token
from emoplug.train.cohort import group_cohorts
from emoplug.train.context import RunContext
from emoplug.train.job_files import job_finished, write_outcome
from emoplug.train.job_log import JobLog
from emoplug.train.outcome import JobOutcome, failure
from emoplug.train.packed import device_inputs_mode
from emoplug.train.progress import Progress
from emoplug.train.warm import warm_feature_cache
from emoplug.train.workers import Worker

POLL_SECONDS = 2.0


@dataclass
class RunSummary:
    """What one process did (``done``/``failed``: job ids it ran; ``skipped``: already done)."""

    output_dir: Path
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: int = 0
    seconds: float = 0.0


def _execute(ctx: RunContext, jobs: list[Job], accelerator: Any, ddp: bool, main: bool,
             progress: Progress, summary: RunSummary) -> None:
    """Run one job, or one cohort of jobs in lockstep; record each (failures included) and
    tell the plugins."""
    from emoplug.train.job import run_cohort, run_job

    epochs = ctx.plan.recipe.train.epochs
    logs = [JobLog(ctx.output_dir, job, epochs, main, progress) for job in jobs]
    try:
        if len(jobs) == 1:
            try:
                outcomes = {jobs[0].id: run_job(ctx, jobs[0], accelerator, ddp=ddp,
                                                on_epoch=logs[0].on_epoch)}
            except Exception as exc:  # recorded; the grid goes on
                spent = time.perf_counter() - logs[0].started
                outcomes = {jobs[0].id: failure(jobs[0], exc, spent)}
        else:
            outcomes = run_cohort(ctx, jobs, accelerator, {log.job.id: log.on_epoch
                                                           for log in logs})
    finally:
        if ddp:  # the prepared model and optimizer, on success or failure
            accelerator.free_memory()
    for log in logs:
        log.close(outcomes[log.job.id].result)
        _finish_job(ctx, log.job, outcomes[log.job.id], main, progress, summary)


def _finish_job(ctx: RunContext, job: Job, outcome: JobOutcome, main: bool,
                progress: Progress, summary: RunSummary) -> None:
    """Write a job's files, tell the plugins, count it and say how it went."""
    if main:
        write_outcome(ctx, job, outcome)
        ctx.registry.notify("emoplug_job_finished", job=job, result=outcome.result)
    result = outcome.result
    (summary.done if outcome.ok else summary.failed).append(job.id)
    progress.advance()
    if outcome.ok:
        test = result["metrics"]["test"]
        scores = " ".join(f"{k.upper()}={test[k]:.3f}" for k in ("ua", "wa") if k in test)
        progress.line(f"done   {job.cell.label} fold={job.fold} seed={job.seed} {scores} "
                      f"({result['timings']['total_s']:.1f}s)")
    else:
        progress.line(f"FAILED {job.cell.label} fold={job.fold} seed={job.seed}: "
                      f"{result['error']}")


def _order_jobs(jobs: list[Job], stage_of: Callable[[Job], str | None]) -> list[Job]:
    """Jobs grouped by the text stage they read, so one stage's outputs are loaded at a time."""
    return sorted(jobs, key=lambda j: (stage_of(j) or "", j.cell.id, j.fold, j.seed))


def _accelerator(mixed_precision: str, kwargs_handlers: list[Any]) -> Any:
    """An ``Accelerator`` with this precision. Accelerate keeps one state per process; a
    later run in the same process (a notebook, a test suite) asking for another precision
    resets it first (the distributed set-up is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and \
            AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=kwargs_handlers)


def run_plan(plan: Plan, output_dir: str | os.PathLike | None = None,
             verbosity: int = 1, worker: Worker | None = None) -> RunSummary:
    """Run every unfinished job of ``plan`` in this process (its share, when launched by
    ``accelerate launch`` or as one of ``--workers``)."""
    from accelerate.utils import DistributedDataParallelKwargs

    start = time.perf_counter()
    settings = plan.recipe.train
    ddp = settings.strategy == "ddp"
    kwargs = [DistributedDataParallelKwargs(find_unused_parameters=True)] if ddp else []
    accelerator = _accelerator(settings.mixed_precision, kwargs)
    device_inputs_mode()  # a bad EMOPLUG_DEVICE_INPUTS stops the run before its jobs
    worker = worker or Worker.from_env()
    if worker is not None and (ddp or accelerator.num_processes > 1):
        raise EmoplugError("--workers shares jobs between local processes; it cannot be "
                           "combined with train.strategy: ddp or accelerate launch")
    rank, world = ((worker.rank, worker.world) if worker else
                   (accelerator.process_index, accelerator.num_processes))
    main = rank == 0
    out = plan.output_dir(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(out)
    if main:
        _write_plan(out, plan, None)

    pending = [j for j in plan.jobs if not job_finished(out, j)]
    pending_ids = {j.id for j in pending}
    summary.skipped = [j.id for j in plan.jobs if j.id not in pending_ids]
    if pending:
        ctx = RunContext(plan, out, rank=rank, world=world)
        if main:
            _write_plan(out, plan, {name: fold.meta["audit"] for name, fold in ctx.folds.items()
                                    if "audit" in fold.meta}, data_record(ctx.corpus))
        token = worker.token if worker else launch_token(accelerator.state)
        claims = Claims(out, token, enabled=world > 1 and not ddp)
        if any(j.cell.audio is not None for j in pending):
            warm_feature_cache(plan, ctx, rank, world, verbose=False)
        progress = Progress(out, pending, verbosity, main)
        if summary.skipped:
            progress.line(f"{len(summary.skipped)} jobs already finished; "
                          f"{len(pending)} to run")
        _run_stages(ctx, pending, accelerator, claims, ddp, progress, summary)
        stage_of = _stage_resolver(ctx)
        # with several processes claiming jobs, cohorts no larger than a fair share each
        size = 1 if ddp else min(settings.cohort, -(-len(pending) // world))
        waiting = _order_jobs(pending, stage_of)
        while waiting:
            blocked = []
            for cohort in group_cohorts(waiting, stage_of, size):
                sid = stage_of(cohort[0])  # the same stage for the whole cohort
                status = _current_stage_status(ctx, sid, claims.token) if sid else {
                    "status": "done"}
                if status is None and ddp:  # stages are settled for every rank under ddp
                    status = {"status": "failed", "error": "stage outputs are missing"}
                if status is None:
                    blocked.extend(cohort)
                    continue
                mine = [job for job in cohort if claims.take(job.id)]
                if status.get("status") != "done":
                    for job in mine:
                        _record_stage_failure(ctx, job, status, main, progress, summary)
                elif mine:
                    _execute(ctx, mine, accelerator, ddp, main or claims.enabled, progress,
                             summary)
            if blocked and len(blocked) == len(waiting):
                time.sleep(POLL_SECONDS)  # another process is still fine-tuning the encoder
            waiting = blocked
        progress.close()
    summary.seconds = time.perf_counter() - start
    if ddp:
        accelerator.wait_for_everyone()
    if main or world > 1:
        line = (f"run {plan.recipe.name}: {len(summary.done)} done, {len(summary.failed)} "
                f"failed, {len(summary.skipped)} skipped (already finished) in "
                f"{summary.seconds:.1f}s -> {out}")
        if verbosity >= 0 and (main or not ddp):
            print(line if world == 1 else f"[rank {rank}] {line}", file=sys.stderr)
    from emoplug.registry import get_registry

    get_registry().notify("emoplug_run_finished", run=summary)
    return summary


def _write_plan(out: Path, plan: Plan, audit: dict[str, Any] | None,
                data: dict[str, Any] | None = None) -> None:
    """``plan.json``: the recipe, the folds (of every protocol), the jobs, each fold's
    leakage audit and the items skipped and excluded by reason (``data``); the last two are
    kept from the last write while the corpus has not been read."""
    if audit is None:
        previous = read_json(out / "plan.json") or {}
        audit, data = previous.get("audit", {}), previous.get("data")
    write_json_atomic(out / "plan.json", {
        "recipe": plan.recipe.model_dump(mode="json"), "source": plan.source,
        "folds": plan.all_folds, "protocols": list(plan.protocol_folds),
        "audit": audit, **({"data": data} if data is not None else {}),
        "jobs": [{"id": j.id, "cell": j.cell.id, "label": j.cell.label, "fold": j.fold,
                  "seed": j.seed} for j in plan.jobs]})


def _stage_resolver(ctx: RunContext) -> Callable[[Job], str | None]:
    def stage_of(job: Job) -> str | None:
        return text_stage.job_stage_id(ctx, job)
    return stage_of


def _run_stages(ctx: RunContext, pending: list[Job], accelerator: Any, claims: Claims,
                ddp: bool, progress: Progress, summary: RunSummary) -> None:
    """Fine-tune each staged text encoder once per (fold, seed) that pending jobs need."""
    stages: dict[str, Job] = {}
    for job in pending:
        sid = text_stage.job_stage_id(ctx, job)
        if sid is not None:
            stages.setdefault(sid, job)
    for sid, job in sorted(stages.items(), key=lambda kv: (kv[1].fold, kv[1].seed)):
        text, fold, seed = job.cell.config["text"], job.fold, job.seed
        status = text_stage.stage_status(ctx, sid)
        if status is not None and status.get("status") == "done":
            continue
        if not claims.take(f"stage-{sid}"):
            continue
        try:
            info = text_stage.run_text_stage(ctx, text, fold, seed, accelerator, ddp=ddp,
                                             control=job.cell.control)
            summary.stages += 1
            control = f" control={job.cell.control}" if job.cell.control else ""
            progress.line(f"stage  {text['type']} fold={fold} seed={seed}{control}: encoder "
                          f"fine-tuned ({info['epochs_run']} epochs, {info['total_s']:.1f}s)")
        except Exception as exc:
            if accelerator.is_main_process or not ddp:
                path = text_stage.stage_path(ctx, sid)
                path.mkdir(parents=True, exist_ok=True)
                write_json_atomic(path / "stage.json", {
                    "status": "failed", "stage": sid, "launch": claims.token,
                    "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
            progress.line(f"FAILED stage {text['type']} fold={fold} seed={seed}: {exc}")
        finally:
            if ddp:  # release the prepared model; no rank reads a stage before it is saved
                accelerator.free_memory()
                accelerator.wait_for_everyone()


def _current_stage_status(ctx: RunContext, sid: str, token: str) -> dict[str, Any] | None:
    """A stage's status as this launch sees it: a failure recorded by an earlier launch
    counts as not run yet (this launch retries that stage)."""
    status = text_stage.stage_status(ctx, sid)
    if status is not None and status.get("status") != "done" and status.get("launch") != token:
        return None
    return status


def _record_stage_failure(ctx: RunContext, job: Job, status: dict[str, Any], main: bool,
                          progress: Progress, summary: RunSummary) -> None:
    exc = RuntimeError(f"text stage failed: {status.get('error', 'unknown error')}")
    outcome = failure(job, exc, 0.0)
    if main:
        write_outcome(ctx, job, outcome)
    summary.failed.append(job.id)
    progress.advance()
    progress.line(f"FAILED {job.cell.label} fold={job.fold} seed={job.seed}: "
                  f"{outcome.result['error']}")
