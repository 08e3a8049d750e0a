"""``emoplug run``: the planner's loop. Plan -> feature cache -> units -> an executor.

Whatever runs the units, the run folder ends the same: ``plan.json``, ``jobs/<id>/`` per job
and ``stages/<id>/`` per staged text encoder, so ``report``, resume and ``export`` do not
care which executor ran them. The executors:

- ``local`` (``lease_executor.py``): this process, sharing units through leases with every
  other process on the folder: the in-process run, ``--workers N`` (``local_workers.py``),
  each rank of ``accelerate launch``, other launches on the same shared folder;
- ``ray`` (``ray_executor.py``): each unit a task on a Ray cluster, results written here.

A finished job (its ``result.json`` says ``done``) is never run again; a failed one is
retried on the next run (not by a launch running beside the one that failed it).
"""

from __future__ import annotations

import os
import sys
import time

from emoplug.data.loading import data_record
from emoplug.errors import EmoplugError
from emoplug.recipe import Plan, audio_mode, transcribed
from emoplug.train import text_stage
from emoplug.train.context import RunContext
from emoplug.train.job_files import job_dir, job_finished
from emoplug.train.lease_executor import LeaseExecutor
from emoplug.train.leases import Leases, launch_token
from emoplug.train.packed import device_inputs_mode
from emoplug.train.progress import Progress, Totals, stamp
from emoplug.train.run_files import write_plan
from emoplug.train.run_summary import RunSummary
from emoplug.train.unit_work import make_accelerator
from emoplug.train.units import plan_units
from emoplug.train.warm import warm_feature_cache, warm_transcripts
from emoplug.train.workers import Worker

EXECUTORS = ("local", "ray")


def run_plan(plan: Plan, output_dir: str | os.PathLike | None = None,
             verbosity: int = 1, worker: Worker | None = None, executor: str = "local",
             address: str | None = None) -> RunSummary:
    """Run every unfinished job of ``plan``: with the ``local`` executor, this process's
    share (see ``lease_executor.py``); with ``ray``, every unit as a task on the Ray cluster
    at ``address`` (a local one when None). Returns once every job is recorded (by any
    process) or this process is stopped."""
    from accelerate.utils import DistributedDataParallelKwargs

    if executor not in EXECUTORS:
        raise EmoplugError(f"--executor {executor!r} is unknown (choose from "
                           f"{', '.join(EXECUTORS)})")
    start = time.perf_counter()
    settings = plan.recipe.train
    ddp = settings.strategy == "ddp"
    kwargs = [DistributedDataParallelKwargs(find_unused_parameters=True)] if ddp else []
    accelerator = make_accelerator(settings.mixed_precision, kwargs)
    device_inputs_mode()  # a bad EMOPLUG_DEVICE_INPUTS stops the run before its jobs
    worker = worker or Worker.from_env()
    if worker is not None and (ddp or accelerator.num_processes > 1):
        raise EmoplugError("--workers shares jobs between local processes; it cannot be "
                           "combined with train.strategy: ddp or accelerate launch")
    if executor == "ray" and (ddp or worker is not None or accelerator.num_processes > 1):
        raise EmoplugError("--executor ray runs every unit as a Ray task; it cannot be "
                           "combined with --workers, train.strategy: ddp or accelerate launch")
    trained_speech = sorted({j.cell.audio for j in plan.jobs
                             if audio_mode(j.cell.config["audio"]) in ("finetune", "staged")})
    if executor == "ray" and trained_speech:
        raise EmoplugError(f"--executor ray does not run speech encoders that train (audio "
                           f"{', '.join(trained_speech)}: mode finetune or staged) yet; run "
                           "this recipe with the local executor (--workers, accelerate launch)")
    rank, world = ((worker.rank, worker.world) if worker else
                   (accelerator.process_index, accelerator.num_processes))
    main = rank == 0
    out = plan.output_dir(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(out, executor=executor)
    if main:
        write_plan(out, plan, None)

    pending = [j for j in plan.jobs if not job_finished(out, j)]
    pending_ids = {j.id for j in pending}
    summary.skipped = [j.id for j in plan.jobs if j.id not in pending_ids]
    if pending:
        ctx = RunContext(plan, out, rank=rank, world=world)
        ctx.show_progress = main and verbosity >= 1
        if main:
            write_plan(out, plan, {name: fold.meta["audit"] for name, fold in ctx.folds.items()
                                   if "audit" in fold.meta}, data_record(ctx.corpus))
        units = plan_units(ctx, pending, settings.cohort)
        stage_records = [text_stage.stage_path(ctx, u.stage) / "stage.json"
                         for u in units if u.kind == "stage"]
        records = [job_dir(out, j) / "result.json" for j in pending] + stage_records
        before = {path: stamp(path) for path in records}
        progress = Progress(out, pending, stage_records, verbosity, main)
        if summary.skipped:
            progress.line(f"{len(summary.skipped)} jobs already finished; {len(pending)} to run")
        if executor == "ray":
            from emoplug.train.ray_executor import run_on_ray

            try:
                run_on_ray(ctx, units, pending, progress, summary, before, address)
            finally:
                summary.totals = progress.close()
        else:
            token = worker.token if worker else launch_token(accelerator.state)
            leases = Leases(out, token, rank, enabled=not ddp)
            run = LeaseExecutor(ctx, accelerator, leases, progress, summary, ddp, main, before)
            try:
                run.say_who_helps(units)
                if any(j.cell.audio is not None for j in pending):
                    warm_feature_cache(plan, ctx, rank, world, verbose=False,
                                       progress=main and verbosity >= 1)
                if any(transcribed(j.cell) for j in pending):
                    warm_transcripts(plan, ctx, rank, world, progress=main and verbosity >= 1)
                run.run(units, pending)
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
