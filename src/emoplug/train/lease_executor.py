"""The lease executor: units run in this process, shared through leases with every other
process working on the same run folder.

The in-process run, each of ``emoplug run --workers N`` and each rank of ``accelerate
launch`` runs :func:`run_with_leases` over the same planned units. A process takes a unit by
its lease (``leases.py``), so a process that finishes early takes more work instead of
idling, and processes of several launches, shells or nodes can share one folder: each unit
runs once. A unit held by another live process is waited for, and taken over when its owner
stops renewing the lease. Under ``train.strategy: ddp`` leases are off: every rank runs every
unit together, data-parallel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoplug.errors import storage_error_in
from emoplug.files import read_json, write_json_atomic
from emoplug.recipe import Job
from emoplug.train import text_stage
from emoplug.train.context import RunContext
from emoplug.train.job_files import job_dir, write_outcome
from emoplug.train.job_log import JobLog
from emoplug.train.leases import Leases
from emoplug.train.outcome import JobOutcome
from emoplug.train.progress import Progress, Stamp, job_line, stage_line, stamp
from emoplug.train.run_summary import RunSummary, raise_if_one_reason
from emoplug.train.signals import raise_if_stopped
from emoplug.train.unit_work import (
    fine_tune_stage,
    stage_failure,
    stage_label,
    stop_reason,
    train_jobs,
)
from emoplug.train.units import Unit, job_units, stage_unit_name

POLL_SECONDS = 2.0


@dataclass
class LeaseExecutor:
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

    def run(self, units: list[Unit], pending: list[Job]) -> None:
        """Fine-tune the stage units no other process holds, then take and run the jobs."""
        for unit in units:
            if unit.kind == "stage" and self.stage_status(unit.stage) is None:
                self.settle_stage(unit.stage, unit.jobs[0])
        self.run_jobs(pending)

    def settled(self, job: Job) -> bool:
        """Whether ``job`` needs no run here: done, or failed in this launch or by another
        launch since this one started (a failure from an earlier run is retried)."""
        return job_settled(self.ctx, job, self.token, self.before)

    def stage_status(self, sid: str) -> dict[str, Any] | None:
        """A stage's status as this launch sees it (like :meth:`settled`)."""
        path = text_stage.stage_path(self.ctx, sid) / "stage.json"
        return current_stage_status(self.ctx, sid, self.token, self.before.get(path))

    def run_jobs(self, pending: list[Job]) -> None:
        """Take and run the pending jobs unit by unit; wait for those whose stage or lease
        another process holds (taking over a stale one) until every job is recorded."""
        settings = self.ctx.plan.recipe.train
        # with several processes taking jobs, cohorts no larger than a fair share each
        size = 1 if self.ddp else min(settings.cohort, -(-len(pending) // self.ctx.world))
        waiting = [j for j in pending if not self.settled(j)]
        while waiting:
            later: list[Job] = []
            worked = False
            for unit in job_units(self.ctx, waiting, size):
                raise_if_stopped()
                mine = self._run_unit(unit, later)
                worked = worked or bool(mine)
                raise_if_one_reason(self.progress)
            if later and not worked:
                time.sleep(POLL_SECONDS)  # another process holds these jobs or their stage
            waiting = later

    def _run_unit(self, unit: Unit, later: list[Job]) -> list[Job]:
        """Run the jobs of ``unit`` this process can take; the others go to ``later``.
        Returns the jobs it took."""
        cohort = list(unit.jobs)
        sid = unit.stage
        if sid is None:
            status: dict[str, Any] | None = {"status": "done"}
        elif self.ddp:  # every rank fine-tuned the stages together, before any job
            status = self.stage_status(sid) or {"status": "failed",
                                                "error": "stage outputs are missing"}
        else:
            status = self.settle_stage(sid, cohort[0])
        if status is None:
            later.extend(cohort)
            return []
        mine = [job for job in cohort if self.leases.take(job.id)]
        for job in [job for job in mine if self.settled(job)]:  # recorded meanwhile
            self.leases.release(job.id)
            mine.remove(job)
        later.extend(job for job in cohort if job not in mine and not self.settled(job))
        why = None
        try:
            if status.get("status") != "done":
                for job in mine:
                    self.finish_job(job, stage_failure(job, status))
            elif mine:
                self.execute(mine)
        except BaseException as exc:
            why = stop_reason(exc)
            raise
        finally:
            for job in mine:
                self.leases.release(job.id, why)
        # a job whose lease was lost waits for its new owner (taken over if it dies)
        if not self.ddp:
            later.extend(job for job in mine if not self.settled(job))
        return mine

    def execute(self, jobs: list[Job]) -> None:
        """Run one job, or one cohort of jobs in lockstep; record each (failures included)
        and tell the plugins."""
        ctx = self.ctx
        write = self.main or not self.ddp
        for job in jobs:
            self.leases.note("start", job.id)
        logs = [JobLog(ctx.output_dir, job, ctx.plan.train_settings(job.cell).epochs, write,
                       self.progress) for job in jobs]
        outcomes = train_jobs(ctx, jobs, self.accelerator, self.ddp, logs)
        for log in logs:
            log.close(outcomes[log.job.id].result)
            self.finish_job(log.job, outcomes[log.job.id])
        for outcome in outcomes.values():  # a job that could not write its files: stop
            full = storage_error_in(outcome.result.get("error") or "")
            if full is not None:
                raise full

    def finish_job(self, job: Job, outcome: JobOutcome) -> None:
        """Write a job's files (a failure's line also to ``failures.log``), tell the plugins
        and count it; unless this process lost the job's lease meanwhile (then the result is
        discarded: the job is another process's, or waits to be taken again)."""
        result = outcome.result
        if not self.leases.owns(job.id):
            self.leases.note("discard", job.id)
            self.progress.line(f"{job.cell.label} fold={job.fold} seed={job.seed}: lease lost "
                               "(see work.log); its result is discarded", level=0)
            return
        result["launch"] = self.token
        result.setdefault("process", {"index": self.ctx.rank, "count": self.ctx.world}).update(
            host=self.leases.host, pid=self.leases.pid)
        if self.main or not self.ddp:
            write_outcome(self.ctx, job, outcome)  # may turn into a failure (unsaved model)
            if result["status"] != "done":
                self.progress.failure(job_line(result))
            self.ctx.registry.notify("emoplug_job_finished", job=job, result=result)
        (self.summary.done if result["status"] == "done" else self.summary.failed).append(job.id)
        self.leases.note("end", job.id, result=result["status"])
        self.progress.refresh()

    def settle_stage(self, sid: str, job: Job) -> dict[str, Any] | None:
        """The stage's status, after fine-tuning it here when it has not run and no other
        live process holds it; None while another process fine-tunes it."""
        status = self.stage_status(sid)
        if status is not None:
            return status
        unit = stage_unit_name(sid)
        if not self.leases.take(unit):
            return None
        why = None
        try:
            status = self.stage_status(sid)  # finished between the first look and the lease
            if status is None:
                self.fine_tune(sid, job)
                status = self.stage_status(sid)  # None when the lease was lost: waited for
        except BaseException as exc:
            why = stop_reason(exc)
            raise
        finally:
            self.leases.release(unit, why)
        return status

    def fine_tune(self, sid: str, job: Job) -> None:
        """Fine-tune one stage here; a failure is recorded in its ``stage.json`` (for this
        launch) and in ``failures.log``. Nothing is written once this process lost the
        stage's lease (the outputs are discarded)."""
        ctx, accelerator = self.ctx, self.accelerator
        label, unit = stage_label(job), stage_unit_name(sid)
        self.leases.note("start", unit)
        try:
            info = fine_tune_stage(ctx, sid, job, accelerator, self.ddp, self.token,
                                   on_batch=self.progress.batches(f"stage {label}"),
                                   keep=lambda: self.leases.owns(unit))
            if info["status"] == "done":
                self.summary.stages += 1
            elif info["status"] == "failed":
                if not self.leases.owns(unit):
                    info["status"] = "discarded"
                elif accelerator.is_main_process or not self.ddp:
                    path = text_stage.stage_path(ctx, sid)
                    path.mkdir(parents=True, exist_ok=True)
                    self.progress.failure(stage_line(info))
                    write_json_atomic(path / "stage.json", info)
        finally:
            if self.ddp:  # release the prepared model; no rank reads a stage before it is saved
                accelerator.free_memory()
                accelerator.wait_for_everyone()
        if info["status"] == "discarded":
            self.leases.note("discard", unit)
            self.progress.line(f"stage {label}: lease lost (see work.log); its outputs are "
                               "discarded", level=0)
        else:
            self.leases.note("end", unit, result=info["status"])
        self.progress.refresh()

    def say_who_helps(self, units: list[Unit]) -> None:
        """One line when other live launches hold units of this run: this one helps."""
        if not self.main:
            return
        held = [h for h in (self.leases.holder(name) for unit in units for name in unit.names)
                if h is not None and h.token != self.token]
        if held:
            owners = ", ".join(sorted({str(h) for h in held}))
            self.progress.line(f"{len(held)} units are held by another live launch ({owners}); "
                               "helping with the rest", level=0)


def job_settled(ctx: RunContext, job: Job, token: str, before: dict[Path, Stamp]) -> bool:
    """Whether ``job`` needs no run by launch ``token``: done, or failed in this launch or by
    another launch since this one started (its record's stamp differs from ``before``)."""
    path = job_dir(ctx.output_dir, job) / "result.json"
    result = read_json(path)
    if result is None:
        return False
    return (result.get("status") == "done" or result.get("launch") == token
            or stamp(path) != before.get(path))


def current_stage_status(ctx: RunContext, sid: str, token: str,
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
