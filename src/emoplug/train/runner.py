"""``emoplug run``: plan -> feature cache -> text stages -> head jobs, resumable and shared.

Under ``accelerate launch --num_processes N`` (or ``emoplug run --workers N``, ``workers.py``)
every process runs :func:`run_plan`. With ``train.strategy: jobs`` (default) processes take
units of work (a text stage or a job) by *leases* (``leases.py``) shared by every launch of
the output folder, so a process that finishes early takes more work instead of idling, and
processes of several launches, shells or nodes can share one folder: each unit runs once.
A unit held by another live process is waited for, and taken over when its owner stops
renewing the lease. With ``train.strategy: ddp`` all processes run every job together,
data-parallel. A finished job (its ``result.json`` says ``done``) is never run again; a
failed one is retried on the next run (not by a launch running beside the one that failed it).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoplug.data.loading import data_record
from emoplug.errors import EmoplugError, storage_error, storage_error_in
from emoplug.files import read_json, write_json_atomic
from emoplug.recipe import Job, Plan
from emoplug.train import text_stage
from emoplug.train.cohort import group_cohorts
from emoplug.train.context import RunContext
from emoplug.train.job_files import job_dir, job_finished, write_outcome
from emoplug.train.job_log import JobLog
from emoplug.train.leases import Leases, launch_token
from emoplug.train.outcome import JobOutcome, failure
from emoplug.train.packed import device_inputs_mode
from emoplug.train.progress import Progress, Stamp, Totals, job_line, stage_line, stamp
from emoplug.train.signals import Stopped, raise_if_stopped
from emoplug.train.warm import warm_feature_cache
from emoplug.train.workers import Worker

POLL_SECONDS = 2.0


@dataclass
class RunSummary:
    """What one process did (``done``/``failed``: job ids it ran; ``skipped``: already done).
    On the main process ``totals`` counts the whole run's jobs from disk (every process's);
    ``workers_ok`` is False when a worker started by ``--workers`` exited with an error."""

    output_dir: Path
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: int = 0
    seconds: float = 0.0
    totals: Totals | None = None
    workers_ok: bool = True

    @property
    def ok(self) -> bool:
        """No job failed, in this process or (on the main process) in the whole run."""
        failed = self.totals.failed if self.totals is not None else len(self.failed)
        return not failed and not self.failed and self.workers_ok


@dataclass
class _Run:
    """One process's share of a run: its context, leases and console, and the stamps of the
    records as they were when it started (a record replaced since was written by another
    process of this run)."""

    ctx: RunContext
    accelerator: Any
    leases: Leases
    progress: Progress
    summary: RunSummary
    ddp: bool
    main: bool
    before: dict[Path, Stamp]

    @property
    def token(self) -> str:
        return self.leases.token

    def settled(self, job: Job) -> bool:
        """Whether ``job`` needs no run here: done, or failed in this launch or by another
        launch since this one started (a failure from an earlier run is retried)."""
        path = job_dir(self.ctx.output_dir, job) / "result.json"
        result = read_json(path)
        if result is None:
            return False
        return (result.get("status") == "done" or result.get("launch") == self.token
                or stamp(path) != self.before.get(path))

    def stage_status(self, sid: str) -> dict[str, Any] | None:
        """A stage's status as this launch sees it (like :meth:`settled`)."""
        path = text_stage.stage_path(self.ctx, sid) / "stage.json"
        return _current_stage_status(self.ctx, sid, self.token, self.before.get(path))


def _execute(run: _Run, jobs: list[Job]) -> None:
    """Run one job, or one cohort of jobs in lockstep; record each (failures included) and
    tell the plugins."""
    from emoplug.train.job import run_cohort, run_job

    ctx, accelerator, progress = run.ctx, run.accelerator, run.progress
    write = run.main or not run.ddp
    for job in jobs:
        run.leases.note("start", job.id)
    logs = [JobLog(ctx.output_dir, job, ctx.plan.train_settings(job.cell).epochs, write,
                   progress) for job in jobs]
    try:
        if len(jobs) == 1:
            try:
                outcomes = {jobs[0].id: run_job(ctx, jobs[0], accelerator, ddp=run.ddp,
                                                on_epoch=logs[0].on_epoch,
                                                on_batch=logs[0].on_batch)}
            except Exception as exc:  # recorded; the grid goes on
                if storage_error(exc) is not None:  # the disk's problem, not the job's
                    raise
                spent = time.perf_counter() - logs[0].started
                outcomes = {jobs[0].id: failure(jobs[0], exc, spent)}
        else:
            outcomes = run_cohort(ctx, jobs, accelerator,
                                  {log.job.id: log.on_epoch for log in logs},
                                  logs[0].on_batch)
    finally:
        if run.ddp:  # the prepared model and optimizer, on success or failure
            accelerator.free_memory()
    for log in logs:
        log.close(outcomes[log.job.id].result)
        _finish_job(run, log.job, outcomes[log.job.id], write)
    for outcome in outcomes.values():  # a job that could not write its files: stop the run
        full = storage_error_in(outcome.result.get("error") or "")
        if full is not None:
            raise full


def _finish_job(run: _Run, job: Job, outcome: JobOutcome, write: bool) -> None:
    """Write a job's files (a failure's line also to ``failures.log``), tell the plugins
    and count it; unless this process lost the job's lease meanwhile (then the result is
    discarded: the job is another process's, or waits to be taken again)."""
    result = outcome.result
    if not run.leases.owns(job.id):
        run.leases.note("discard", job.id)
        run.progress.line(f"{job.cell.label} fold={job.fold} seed={job.seed}: lease lost "
                          "(see work.log); its result is discarded", level=0)
        return
    result["launch"] = run.token
    result.setdefault("process", {"index": run.ctx.rank, "count": run.ctx.world}).update(
        host=run.leases.host, pid=run.leases.pid)
    if write:
        write_outcome(run.ctx, job, outcome)  # may turn into a failure (an unsaved model)
        if result["status"] != "done":
            run.progress.failure(job_line(result))
        run.ctx.registry.notify("emoplug_job_finished", job=job, result=result)
    (run.summary.done if result["status"] == "done" else run.summary.failed).append(job.id)
    run.leases.note("end", job.id, result=result["status"])
    run.progress.refresh()


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
    ``accelerate launch``, as one of ``--workers`` or beside another launch on the same
    folder). Returns once every job is recorded (by any process) or this process is stopped."""
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
        ctx.show_progress = main and verbosity >= 1
        if main:
            _write_plan(out, plan, {name: fold.meta["audit"] for name, fold in ctx.folds.items()
                                    if "audit" in fold.meta}, data_record(ctx.corpus))
        token = worker.token if worker else launch_token(accelerator.state)
        leases = Leases(out, token, rank, enabled=not ddp)
        stages = _pending_stages(ctx, pending)
        records = [job_dir(out, j) / "result.json" for j in pending] + [
            text_stage.stage_path(ctx, sid) / "stage.json" for sid in stages]
        progress = Progress(out, pending, records[len(pending):], verbosity, main)
        run = _Run(ctx, accelerator, leases, progress, summary, ddp, main,
                   {path: stamp(path) for path in records})
        try:
            if summary.skipped:
                progress.line(f"{len(summary.skipped)} jobs already finished; "
                              f"{len(pending)} to run")
            _say_who_helps(run, pending, stages)
            if any(j.cell.audio is not None for j in pending):
                warm_feature_cache(plan, ctx, rank, world, verbose=False,
                                   progress=main and verbosity >= 1)
            _run_stages(run, stages)
            _run_jobs(run, pending)
        finally:
            leases.release_all()
            totals = progress.close()
            summary.totals = totals if main else None
        if leases.taken_over:
            owners = ", ".join(sorted({str(h) for _, h in leases.taken_over}))
            progress.line(f"took over {len(leases.taken_over)} units from stopped "
                          f"processes ({owners})", level=0)
    if main and summary.totals is None:  # nothing was left to run
        summary.totals = Totals()
    summary.seconds = time.perf_counter() - start
    if ddp:
        accelerator.wait_for_everyone()
    if main and verbosity >= 0:
        totals = summary.totals
        print(f"run {plan.recipe.name}: {totals.done} done, {totals.failed} failed, "
              f"{len(summary.skipped)} skipped (already finished) in {summary.seconds:.1f}s "
              f"-> {out}", file=sys.stderr)
    from emoplug.registry import get_registry

    get_registry().notify("emoplug_run_finished", run=summary)
    return summary


def _say_who_helps(run: _Run, pending: list[Job], stages: dict[str, Job]) -> None:
    """One line when other live launches hold units of this run: this one helps."""
    if not run.main:
        return
    held = [h for h in (run.leases.holder(unit) for unit in
                        [*(j.id for j in pending), *(f"stage-{s}" for s in stages)])
            if h is not None and h.token != run.token]
    if held:
        owners = ", ".join(sorted({str(h) for h in held}))
        run.progress.line(f"{len(held)} units are held by another live launch ({owners}); "
                          "helping with the rest", level=0)


def _run_jobs(run: _Run, pending: list[Job]) -> None:
    """Take and run the pending jobs cohort by cohort; wait for those whose stage or lease
    another process holds (taking over a stale one) until every job is recorded."""
    ctx, settings = run.ctx, run.ctx.plan.recipe.train
    stage_of = _stage_resolver(ctx)
    # with several processes taking jobs, cohorts no larger than a fair share each
    size = 1 if run.ddp else min(settings.cohort, -(-len(pending) // ctx.world))
    waiting = [j for j in _order_jobs(pending, stage_of) if not run.settled(j)]
    while waiting:
        later: list[Job] = []
        worked = False
        for cohort in group_cohorts(waiting, stage_of, size):
            raise_if_stopped()
            sid = stage_of(cohort[0])  # the same stage for the whole cohort
            if sid is None:
                status: dict[str, Any] | None = {"status": "done"}
            elif run.ddp:  # every rank fine-tuned the stages together, before any job
                status = run.stage_status(sid) or {"status": "failed",
                                                   "error": "stage outputs are missing"}
            else:
                status = _settle_stage(run, sid, cohort[0])
            if status is None:
                later.extend(cohort)
                continue
            mine = [job for job in cohort if run.leases.take(job.id)]
            for job in [job for job in mine if run.settled(job)]:  # recorded meanwhile
                run.leases.release(job.id)
                mine.remove(job)
            later.extend(job for job in cohort if job not in mine and not run.settled(job))
            why = None
            try:
                if status.get("status") != "done":
                    for job in mine:
                        _record_stage_failure(run, job, status)
                elif mine:
                    _execute(run, mine)
            except BaseException as exc:
                why = _stop_reason(exc)
                raise
            finally:
                for job in mine:
                    run.leases.release(job.id, why)
            # a job whose lease was lost waits for its new owner (taken over if it dies)
            if not run.ddp:
                later.extend(job for job in mine if not run.settled(job))
            worked = worked or bool(mine)
            error = run.progress.one_reason()
            if error is not None:
                raise OneReasonFailure(
                    f"every job so far ({run.progress.totals.failed}, of "
                    f"{len(run.progress.failures.cells[error])} cells) failed with: {error}; "
                    "stopped: fix that and run the same command again (finished jobs are "
                    "kept, failed ones are retried)")
        if later and not worked:
            time.sleep(POLL_SECONDS)  # another process holds these jobs or their stage
        waiting = later


class OneReasonFailure(EmoplugError):
    """Every job of a run failed with one error: a problem of the recipe or the data, told
    once instead of once per job."""


def _write_plan(out: Path, plan: Plan, audit: dict[str, Any] | None,
                data: dict[str, Any] | None = None) -> None:
    """``plan.json``: the recipe, the folds (of every protocol), the jobs, each fold's
    leakage audit and the items skipped and excluded by reason (``data``); the last two are
    kept from the last write while the corpus has not been read. Every plan the folder has
    had is kept as ``plans/<hash>.json`` (the previous one before it is replaced)."""
    previous = read_json(out / "plan.json")
    if audit is None:
        audit, data = (previous or {}).get("audit", {}), (previous or {}).get("data")
    payload = {
        "recipe": plan.recipe.model_dump(mode="json"), "source": plan.source,
        "folds": plan.all_folds, "protocols": list(plan.protocol_folds),
        "audit": audit, **({"data": data} if data is not None else {}),
        "jobs": [{"id": j.id, "cell": j.cell.id, "label": j.cell.label, "fold": j.fold,
                  "seed": j.seed} for j in plan.jobs]}
    (out / "plans").mkdir(exist_ok=True)
    if isinstance(previous, dict) and not (out / "plans" / _plan_file(previous)).exists():
        write_json_atomic(out / "plans" / _plan_file(previous), previous)
    write_json_atomic(out / "plans" / _plan_file(payload), payload)
    write_json_atomic(out / "plan.json", payload)


def _plan_file(payload: dict[str, Any]) -> str:
    """The file name under ``plans/`` of a ``plan.json`` payload: a hash of its recipe and
    job ids (rewriting the same plan, e.g. with its audit, keeps one file)."""
    from emoplug.recipe import stable_hash

    jobs = payload.get("jobs")
    ids = [j.get("id") for j in jobs if isinstance(j, dict)] if isinstance(jobs, list) else []
    return f"{stable_hash({'recipe': payload.get('recipe'), 'jobs': ids})}.json"


def check_plan_change(out: Path, plan: Plan, force: bool) -> str | None:
    """Refuse to run ``plan`` into a run folder that holds another study: a different
    recipe, or settings of the same recipe under which some of its planned jobs would no
    longer be part of the plan (stale). With ``force`` it goes on and the warning line is
    returned (the previous plan is kept under ``plans/``). A plan that only adds jobs
    (more seeds, more cells) is no change of study. Raises :class:`EmoplugError`."""
    path = out / "plan.json"
    if not path.exists():
        return None
    previous = read_json(path)
    jobs = previous.get("jobs") if isinstance(previous, dict) else None
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and "id" in j for j in jobs):
        problem = f"{path} is damaged (not a plan's JSON), so what the folder holds is unknown"
        if not force:
            raise EmoplugError(f"--output: {problem}; run with --force to replace it")
        return f"emoplug: warning: {problem}; replaced (--force)"
    new_ids = {j.id for j in plan.jobs}
    stale = [j for j in jobs if j["id"] not in new_ids]
    name = (previous.get("recipe") or {}).get("name")
    if name != plan.recipe.name:
        problem = (f"{out} holds the run of recipe '{name}' ({len(jobs)} jobs); running "
                   f"recipe '{plan.recipe.name}' there would mix two studies in one folder")
    elif stale:
        shown = ", ".join(f"{j.get('label')} fold={j.get('fold')} seed={j.get('seed')}"
                          for j in stale[:3])
        problem = (f"{out} holds a plan of recipe '{name}' with other settings: "
                   f"{len(stale)} of its {len(jobs)} jobs would become stale (e.g. {shown})")
    else:
        return None
    if not force:
        raise EmoplugError(f"--output: {problem}; give another --output, or --force to run "
                           "it here (every earlier plan is kept under plans/)")
    return (f"emoplug: warning: {problem}; running it there (--force); the earlier plan is "
            f"kept as {out / 'plans' / _plan_file(previous)}")


def _stage_resolver(ctx: RunContext) -> Callable[[Job], str | None]:
    def stage_of(job: Job) -> str | None:
        return text_stage.job_stage_id(ctx, job)
    return stage_of


def _pending_stages(ctx: RunContext, pending: list[Job]) -> dict[str, Job]:
    """The staged text encoders pending jobs read: stage id -> a job reading it, in the
    order they run (by fold, then seed)."""
    stages: dict[str, Job] = {}
    for job in pending:
        sid = text_stage.job_stage_id(ctx, job)
        if sid is not None:
            stages.setdefault(sid, job)
    return dict(sorted(stages.items(), key=lambda kv: (kv[1].fold, kv[1].seed)))


def _run_stages(run: _Run, stages: dict[str, Job]) -> None:
    """Fine-tune each staged text encoder once per (fold, seed) that pending jobs need, those
    no other process holds (the jobs wait for the rest, see :func:`_settle_stage`)."""
    for sid, job in stages.items():
        if run.stage_status(sid) is None:
            _settle_stage(run, sid, job)


def _settle_stage(run: _Run, sid: str, job: Job) -> dict[str, Any] | None:
    """The stage's status, after fine-tuning it here when it has not run and no other live
    process holds it; None while another process fine-tunes it."""
    status = run.stage_status(sid)
    if status is not None:
        return status
    unit = f"stage-{sid}"
    if not run.leases.take(unit):
        return None
    why = None
    try:
        status = run.stage_status(sid)  # finished between the first look and the lease
        if status is None:
            _fine_tune(run, sid, job)
            status = run.stage_status(sid)  # None when the lease was lost: waited for
    except BaseException as exc:
        why = _stop_reason(exc)
        raise
    finally:
        run.leases.release(unit, why)
    return status


def _stop_reason(exc: BaseException) -> str:
    """Why a unit was abandoned, for ``work.log``: the stop signal's name, or ``error``."""
    return signal.Signals(exc.signum).name if isinstance(exc, Stopped) else "error"


def _fine_tune(run: _Run, sid: str, job: Job) -> None:
    """Fine-tune one stage here; a failure is recorded in its ``stage.json`` (for this
    launch) and in ``failures.log``. Nothing is written once this process lost the stage's
    lease (the outputs are discarded)."""
    ctx, accelerator = run.ctx, run.accelerator
    text, fold, seed = job.cell.config["text"], job.fold, job.seed
    label, unit = f"{text['type']} fold={fold} seed={seed}", f"stage-{sid}"
    run.leases.note("start", unit)
    try:
        info = text_stage.run_text_stage(ctx, text, fold, seed, accelerator, ddp=run.ddp,
                                         control=job.cell.control,
                                         on_batch=run.progress.batches(f"stage {label}"),
                                         keep=lambda: run.leases.owns(unit))
        if info["status"] == "done":
            run.summary.stages += 1
    except Exception as exc:
        if storage_error(exc) is not None:  # the disk's problem, not the stage's
            raise
        info = {"status": "failed", "stage": sid, "launch": run.token, "text": text,
                "fold": fold, "seed": seed, "control": job.cell.control,
                "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        if not run.leases.owns(unit):
            info["status"] = "discarded"
        elif accelerator.is_main_process or not run.ddp:
            path = text_stage.stage_path(ctx, sid)
            path.mkdir(parents=True, exist_ok=True)
            run.progress.failure(stage_line(info))
            write_json_atomic(path / "stage.json", info)
    finally:
        if run.ddp:  # release the prepared model; no rank reads a stage before it is saved
            accelerator.free_memory()
            accelerator.wait_for_everyone()
    if info["status"] == "discarded":
        run.leases.note("discard", unit)
        run.progress.line(f"stage {label}: lease lost (see work.log); its outputs are "
                          "discarded", level=0)
    else:
        run.leases.note("end", unit, result=info["status"])
    run.progress.refresh()


def _current_stage_status(ctx: RunContext, sid: str, token: str,
                          before: Stamp) -> dict[str, Any] | None:
    """A stage's status as this launch sees it: a failure recorded by an earlier launch (one
    whose ``stage.json`` was there, as ``before``, when this launch started) counts as not
    run yet (this launch retries that stage); one recorded by this launch, or by another
    launch running beside it, stands."""
    status = text_stage.stage_status(ctx, sid)
    if status is None or status.get("status") == "done" or status.get("launch") == token:
        return status
    changed = stamp(text_stage.stage_path(ctx, sid) / "stage.json") != before
    return status if changed else None


def _record_stage_failure(run: _Run, job: Job, status: dict[str, Any]) -> None:
    exc = RuntimeError(f"text stage failed: {status.get('error', 'unknown error')}")
    _finish_job(run, job, failure(job, exc, 0.0), run.main or not run.ddp)
