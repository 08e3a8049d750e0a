"""What running a unit means, whichever executor runs it: train a unit's jobs, fine-tune a
stage, and turn a failure into its record. Leases, consoles and where files go are the
executors' business (``lease_executor.py``, ``ray_executor.py``)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from emoplug.errors import storage_error
from emoplug.recipe import Job
from emoplug.train import text_stage
from emoplug.train.context import RunContext
from emoplug.train.job_log import JobLog
from emoplug.train.loop import OnBatch
from emoplug.train.outcome import JobOutcome, failure
from emoplug.train.signals import Stopped


def make_accelerator(mixed_precision: str, kwargs_handlers: list[Any]) -> Any:
    """An ``Accelerator`` with this precision. Accelerate keeps one state per process; a
    later run in the same process (a notebook, a test suite, a Ray worker) asking for
    another precision resets it first (the distributed set-up is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and \
            AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=kwargs_handlers)


def train_jobs(ctx: RunContext, jobs: list[Job], accelerator: Any, ddp: bool,
               logs: list[JobLog]) -> dict[str, JobOutcome]:
    """Train and evaluate one job, or one cohort of jobs in lockstep; a job's exception
    becomes its failure record (a storage error propagates: the disk's problem, not the
    job's). ``logs``: each job's :class:`JobLog`, in the order of ``jobs``."""
    from emoplug.train.job import run_cohort, run_job

    try:
        if len(jobs) > 1:
            return run_cohort(ctx, jobs, accelerator, {log.job.id: log.on_epoch for log in logs},
                              logs[0].on_batch)
        try:
            return {jobs[0].id: run_job(ctx, jobs[0], accelerator, ddp=ddp,
                                        on_epoch=logs[0].on_epoch, on_batch=logs[0].on_batch)}
        except Exception as exc:  # recorded; the grid goes on
            if storage_error(exc) is not None:
                raise
            return {jobs[0].id: failure(jobs[0], exc, time.perf_counter() - logs[0].started)}
    finally:
        if ddp:  # the prepared model and optimizer, on success or failure
            accelerator.free_memory()


def fine_tune_stage(ctx: RunContext, sid: str, job: Job, accelerator: Any, ddp: bool,
                    token: str, on_batch: OnBatch | None = None,
                    keep: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Fine-tune stage ``sid`` (the text config, fold and seed of ``job``) and save it; its
    info, ``status`` done, failed (not saved: the caller records it) or discarded (``keep()``
    said no before saving). A storage error propagates."""
    text = job.cell.config["text"]
    try:
        return text_stage.run_text_stage(ctx, text, job.fold, job.seed, accelerator, ddp=ddp,
                                         control=job.cell.control, on_batch=on_batch,
                                         keep=keep)
    except Exception as exc:
        if storage_error(exc) is not None:
            raise
        return {"status": "failed", "stage": sid, "launch": token, "text": text,
                "fold": job.fold, "seed": job.seed, "control": job.cell.control,
                "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def stage_label(job: Job) -> str:
    """How a stage is named in console lines: its encoder, fold and seed."""
    return f"{job.cell.config['text']['type']} fold={job.fold} seed={job.seed}"


def stage_failure(job: Job, status: dict[str, Any]) -> JobOutcome:
    """The record of a job whose stage failed (the job itself never starts)."""
    exc = RuntimeError(f"text stage failed: {status.get('error', 'unknown error')}")
    return failure(job, exc, 0.0)


def stop_reason(exc: BaseException) -> str:
    """Why a unit was abandoned, for ``work.log``: the stop signal's name, or ``error``."""
    return signal.Signals(exc.signum).name if isinstance(exc, Stopped) else "error"
