"""The planner: a run's pending work as units, planned once for every executor.

A unit is a staged text encoder to fine-tune (``kind == "stage"``) or head jobs to train
together (``kind == "jobs"``: a cohort, or one job alone). A jobs unit reading a stage
depends on that stage's unit. Executors (``lease_executor.py``: in-process, ``--workers``,
``accelerate launch`` ranks; ``ray_executor.py``: a Ray cluster) run the units; what a unit
does is the same whichever runs it (``unit_work.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from emoplug.recipe import Job
from emoplug.train import text_stage
from emoplug.train.cohort import group_cohorts
from emoplug.train.context import RunContext


@dataclass(frozen=True)
class Unit:
    """One unit of work. ``stage``: the stage id it fine-tunes (a stage unit) or reads (a
    jobs unit; None when its cells' text is not staged). ``jobs``: the jobs it trains, or
    for a stage unit the first job reading the stage (whose config it fine-tunes)."""

    kind: Literal["stage", "jobs"]
    jobs: tuple[Job, ...]
    stage: str | None = None

    @property
    def names(self) -> list[str]:
        """The names of this unit's work in leases and ``work.log``."""
        if self.kind == "stage":
            return [stage_unit_name(self.stage or "")]
        return [job.id for job in self.jobs]


def stage_unit_name(sid: str) -> str:
    return f"stage-{sid}"


def stage_of(ctx: RunContext, job: Job) -> str | None:
    """The stage id ``job`` reads, or None."""
    return text_stage.job_stage_id(ctx, job)


def order_jobs(ctx: RunContext, jobs: list[Job]) -> list[Job]:
    """Jobs grouped by the text stage they read, so one stage's outputs are loaded at a time."""
    return sorted(jobs, key=lambda j: (stage_of(ctx, j) or "", j.cell.id, j.fold, j.seed))


def pending_stages(ctx: RunContext, pending: list[Job]) -> dict[str, Job]:
    """The staged text encoders pending jobs read: stage id -> a job reading it, in the
    order they run (by fold, then seed)."""
    stages: dict[str, Job] = {}
    for job in pending:
        sid = stage_of(ctx, job)
        if sid is not None:
            stages.setdefault(sid, job)
    return dict(sorted(stages.items(), key=lambda kv: (kv[1].fold, kv[1].seed)))


def job_units(ctx: RunContext, jobs: list[Job], cohort_size: int) -> list[Unit]:
    """``jobs`` as units: cohorts of at most ``cohort_size`` jobs with the same inputs (see
    ``cohort.py``), grouped by stage."""
    def stage(job: Job) -> str | None:
        return stage_of(ctx, job)

    return [Unit("jobs", tuple(cohort), stage(cohort[0]))
            for cohort in group_cohorts(order_jobs(ctx, jobs), stage, cohort_size)]


def plan_units(ctx: RunContext, pending: list[Job], cohort_size: int) -> list[Unit]:
    """Every unit of ``pending``: the stages they read first, then the jobs units."""
    stages = [Unit("stage", (job,), sid) for sid, job in pending_stages(ctx, pending).items()]
    return [*stages, *job_units(ctx, pending, cohort_size)]
