"""The Ray executor (``emoplug run RECIPE --executor ray [--address ADDR]``): every planned
unit a Ray task, the results written into the run folder by this process (the driver).

- **Resources** per unit kind come from the recipe's ``resources:`` (CPUs, GPUs: a fraction
  such as 0.125 packs that many head jobs onto one device), and ``max_retries``: a task whose
  worker or node is lost runs again, up to that many times; an error of the unit's own is
  recorded as its failure, not retried.
- **Dependencies**: a job reading a staged text encoder is submitted once the stage's task
  has returned and its files are written; the job gets them as an object ref the driver
  put in the object store (so a lost node never makes Ray fine-tune a stage again to
  rebuild its result). A job whose stage failed is recorded failed without starting.
- **What reaches the workers** (no shared folder needed; ``ray_worker.py``): the plan,
  corpus and folds once (with the transcripts of ``source: asr`` text encoders, made here
  first), the audio features one object per featurizer (computed and cached here first),
  stage files through the refs above. Each task returns its unit's files; the
  driver writes them, ``result.json``/``stage.json`` last, exactly where a local run would.
- **Each unit runs once**: the driver holds each unit's lease while its task runs (a local
  launch on the same folder leaves it alone and vice versa); a worker logs its start in
  ``work.log`` through an actor on this node before it works; an attempt lost with its
  worker is logged ``abandon why=worker_lost`` when Ray's retry finishes.
- **Stops**: Ctrl-C (or SIGTERM) cancels every running task, logs each as abandoned and
  releases the leases; finished units are kept, a rerun resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emoplug.errors import EmoplugError
from emoplug.files import read_json, write_json_atomic
from emoplug.recipe import Job, UnitResources, transcribed
from emoplug.train import text_stage, work_log
from emoplug.train.context import RunContext
from emoplug.train.job_files import job_dir, write_outcome
from emoplug.train.lease_executor import current_stage_status, job_settled
from emoplug.train.leases import Leases, new_token
from emoplug.train.outcome import failure
from emoplug.train.progress import Progress, Stamp, job_line, stage_line
from emoplug.train.ray_worker import (
    RunSnapshot,
    WorkLogWriter,
    audio_configs,
    pack_folder,
    run_unit,
    unpack_folder,
)
from emoplug.train.run_summary import RunSummary, raise_if_one_reason
from emoplug.train.signals import raise_if_stopped, stops_deferred
from emoplug.train.unit_work import stage_failure, stop_reason
from emoplug.train.units import Unit
from emoplug.train.warm import warm_feature_cache, warm_transcripts

POLL_SECONDS = 1.0


def import_ray() -> Any:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EmoplugError("--executor ray needs Ray: pip install 'emoplug[ray]'") from None
    return ray


def run_on_ray(ctx: RunContext, units: list[Unit], pending: list[Job], progress: Progress,
               summary: RunSummary, before: dict[Path, Stamp], address: str | None) -> None:
    """Run ``units`` as Ray tasks on the cluster at ``address`` (``auto``: the one started
    on this machine with ``ray start``; None: a new local cluster, unless this process
    already joined one) and write their results into ``ctx.output_dir``."""
    import torch

    ray = import_ray()
    joined_here = not ray.is_initialized()
    if joined_here:
        try:
            ray.init(address=address, include_dashboard=False,
                     log_to_driver=progress.verbosity >= 2, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EmoplugError(f"--address {address}: cannot join a Ray cluster: "
                               f"{str(exc).splitlines()[0]}") from None
    try:
        if any(j.cell.audio is not None for j in pending):
            warm_feature_cache(ctx.plan, ctx, 0, 1, verbose=False,
                               progress=progress.main and progress.verbosity >= 1)
        if any(transcribed(j.cell) for j in pending):
            warm_transcripts(ctx.plan, ctx, 0, 1,
                             progress=progress.main and progress.verbosity >= 1)
        driver = _Driver(ray, ctx, progress, summary, before, Leases(ctx.output_dir,
                                                                     new_token(), 0))
        driver.start(torch.get_num_threads())
        driver.run(units)
    finally:
        if joined_here:
            ray.shutdown()


@dataclass
class _Driver:
    """The driver's state while units run on Ray."""

    ray: Any
    ctx: RunContext
    progress: Progress
    summary: RunSummary
    before: dict[Path, Stamp]
    leases: Leases
    inflight: dict[Any, Unit] = field(default_factory=dict)
    stage_refs: dict[str, Any] = field(default_factory=dict)
    _log_offset: int = 0
    _starts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def token(self) -> str:
        return self.leases.token

    def start(self, threads: int) -> None:
        """Put what every unit reads into the object store; start the work.log writer on
        this node."""
        ray, ctx = self.ray, self.ctx
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        transcripts = {}
        for cell in ctx.plan.cells:
            if transcribed(cell):
                shipped = ctx.asr_transcripts(cell.config["text"]["asr"])
                transcripts[ctx.registry.build("asr", cell.config["text"]["asr"]).cache_key()] \
                    = shipped
        self.snapshot = ray.put(RunSnapshot(ctx.plan, ctx.corpus, list(ctx.folds.values()),
                                            self.token, threads, transcripts))
        self.features = {}
        for config in audio_configs(ctx.plan):
            shipped = ctx.feature_arrays(config)
            if shipped.key not in self.features:
                self.features[shipped.key] = ray.put(shipped)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.log = ray.remote(WorkLogWriter).options(
            num_cpus=0, scheduling_strategy=here).remote(str(ctx.output_dir), self.token)
        self.task = ray.remote(run_unit)
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        resources = ctx.plan.recipe.resources
        self.options = {kind: _options(spec, gpus, resources.max_retries)
                        for kind, spec in (("stage", resources.stage), ("jobs", resources.job))}

    def run(self, units: list[Unit]) -> None:
        """Submit every unit whose stage is ready and whose leases this driver takes; write
        each result as it comes; until every unit is recorded (or the run is stopped)."""
        waiting = list(units)
        try:
            while waiting or self.inflight:
                raise_if_stopped()
                waiting = [rest for unit in waiting for rest in self._submit(unit)]
                self.progress.postfix(f"{len(self.inflight)} units submitted to Ray")
                if self.inflight:
                    with stops_deferred():  # a stop raised inside Ray's C wait is garbled
                        done, _ = self.ray.wait(list(self.inflight), num_returns=1,
                                                timeout=POLL_SECONDS)
                    for ref in done:
                        self._finish(ref, self.inflight.pop(ref))
                elif waiting:
                    time.sleep(POLL_SECONDS)  # another launch holds these units or stages
                raise_if_one_reason(self.progress)
        except BaseException as exc:
            self._abandon_inflight(stop_reason(exc))
            raise
        finally:
            self.leases.release_all()

    def _submit(self, unit: Unit) -> list[Unit]:
        """Submit ``unit`` (its share this driver can take); returns what must wait."""
        if unit.kind == "stage":
            return self._submit_stage(unit)
        jobs = [j for j in unit.jobs if not self._settled(j)]
        if not jobs:
            return []
        status = self._stage_ready(unit.stage)
        if status is None:
            return [replace(unit, jobs=tuple(jobs))]  # its stage is running (here or not)
        mine = [j for j in jobs if self.leases.take(j.id)]
        for job in [j for j in mine if self._settled(j)]:  # recorded meanwhile
            self.leases.release(job.id)
            mine.remove(job)
        rest = [j for j in jobs if j not in mine and not self._settled(j)]
        if mine and status.get("status") != "done":  # the stage failed: the jobs never start
            for job in mine:
                outcome = stage_failure(job, status)
                outcome.result["launch"] = self.token
                write_outcome(self.ctx, job, outcome)
                self._recorded(unit, job.id, "failed", self._driver_process())
        elif mine:
            ref = self.task.options(**self.options["jobs"]).remote(
                self.snapshot, replace(unit, jobs=tuple(mine)),
                self.stage_refs.get(unit.stage), self.log, *self._features_of(mine))
            self.inflight[ref] = replace(unit, jobs=tuple(mine))
        return [replace(unit, jobs=tuple(rest))] if rest else []

    def _stage_ready(self, sid: str | None) -> dict[str, Any] | None:
        """The status of the stage jobs read (``done`` without one), once it is recorded in
        the run folder; a finished stage's files are then put in the object store (owned by
        the driver, so a lost node never makes Ray fine-tune it again). None while it runs."""
        if sid is None:
            return {"status": "done"}
        status = self._stage_status(sid)
        if status is not None and status.get("status") == "done" and sid not in self.stage_refs:
            folder = text_stage.stage_path(self.ctx, sid)
            self.stage_refs[sid] = self.ray.put({"files": {f"stages/{sid}": pack_folder(folder)}})
        return status

    def _submit_stage(self, unit: Unit) -> list[Unit]:
        """Submit a stage unless it is recorded already; it waits while another launch holds
        its lease (the jobs reading it wait for its record)."""
        sid, name = unit.stage, unit.names[0]
        if self._stage_status(sid) is not None:
            return []
        if not self.leases.take(name):
            return [unit]
        if self._stage_status(sid) is not None:  # recorded between the look and the lease
            self.leases.release(name)
            return []
        ref = self.task.options(**self.options["stage"]).remote(self.snapshot, unit, None,
                                                                self.log)
        self.inflight[ref] = unit
        return []

    def _features_of(self, jobs: list[Job]) -> list[Any]:
        keys = {self.ctx.features(j.cell.config["audio"]).featurizer.cache_key()
                for j in jobs if j.cell.config["audio"] is not None}
        return [self.features[key] for key in sorted(keys)]

    def _finish(self, ref: Any, unit: Unit) -> None:
        """Write what ``unit``'s task returned (or its failure) into the run folder."""
        try:
            value = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # lost more than max_retries times
            self._record_lost(unit, exc)
            return
        self._excuse_lost_attempts(unit, value["process"])
        for name, status in value["statuses"].items():
            if not self.leases.owns(name):
                self._note(value["process"], "discard", name)
                continue
            folder = f"stages/{unit.stage}" if unit.kind == "stage" else f"jobs/{name}"
            unpack_folder(value["files"].get(folder, {}), self.ctx.output_dir / folder)
            self._recorded(unit, name, status, value["process"])

    def _recorded(self, unit: Unit, name: str, status: str, process: str) -> None:
        """Count, show and tell the plugins of one unit's record just written."""
        out = self.ctx.output_dir
        if unit.kind == "stage":
            if status == "done":
                self.summary.stages += 1
            else:
                self.progress.failure(stage_line(read_json(
                    text_stage.stage_path(self.ctx, unit.stage) / "stage.json")))
        else:
            job = next(j for j in unit.jobs if j.id == name)
            result = read_json(job_dir(out, job) / "result.json")
            if status != "done":
                self.progress.failure(job_line(result))
            self.ctx.registry.notify("emoplug_job_finished", job=job, result=result)
            (self.summary.done if status == "done" else self.summary.failed).append(job.id)
        self._note(process, "end", name, result=status)
        self.leases.release(name)
        self.progress.refresh()

    def _record_lost(self, unit: Unit, exc: BaseException) -> None:
        """Record the failure of a unit whose task failed as a whole (its worker lost more
        than ``max_retries`` times, or a stage it reads failed the same way)."""
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self._excuse_lost_attempts(unit, None)
        if unit.kind == "stage":
            info = {"status": "failed", "stage": unit.stage, "launch": self.token,
                    "text": unit.jobs[0].cell.config["text"], "fold": unit.jobs[0].fold,
                    "seed": unit.jobs[0].seed, "control": unit.jobs[0].cell.control,
                    "error": error}
            path = text_stage.stage_path(self.ctx, unit.stage)
            path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path / "stage.json", info)
            self._recorded(unit, unit.names[0], "failed", self._driver_process())
            return
        for job in unit.jobs:
            outcome = failure(job, RuntimeError(f"its Ray task failed: {error}"), 0.0)
            outcome.result["launch"] = self.token
            write_outcome(self.ctx, job, outcome)
            self._recorded(unit, job.id, "failed", self._driver_process())

    def _abandon_inflight(self, why: str) -> None:
        """Cancel every running task; log each started attempt as abandoned."""
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)
        starts = self._read_starts()
        for unit in self.inflight.values():
            for name in unit.names:
                for process in starts.get(name, [])[-1:]:
                    self._note(process, "abandon", name, why=why)
        self.inflight.clear()

    def _excuse_lost_attempts(self, unit: Unit, final: str | None) -> None:
        """Log ``abandon why=worker_lost`` for the attempts of ``unit`` before its last one
        (Ray ran it again because their worker was lost), and for every attempt when
        ``final`` is None (the task failed as a whole)."""
        starts = self._read_starts()
        for name in unit.names:
            attempts = starts.pop(name, [])
            if final is not None and attempts and attempts[-1] == final:
                attempts = attempts[:-1]
            for process in attempts:
                self._note(process, "abandon", name, why="worker_lost")

    def _read_starts(self) -> dict[str, list[str]]:
        """The worker processes that started each unit and have not closed it, read from
        the new whole lines of ``work.log``."""
        path = self.ctx.output_dir / work_log.WORK_LOG
        try:
            with open(path, "rb") as f:
                f.seek(self._log_offset)
                chunk = f.read()
        except FileNotFoundError:
            return self._starts
        whole = chunk[:chunk.rfind(b"\n") + 1]
        self._log_offset += len(whole)
        for line in whole.decode().splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[4] == "start" and fields[2] == self.token:
                self._starts.setdefault(fields[5], []).append(fields[1])
        return self._starts

    def _note(self, process: str, event: str, unit: str, **details: object) -> None:
        work_log.append(self.ctx.output_dir, process, self.token, 0, event, unit, **details)

    def _driver_process(self) -> str:
        return f"{self.leases.host}:{self.leases.pid}"

    def _settled(self, job: Job) -> bool:
        return job_settled(self.ctx, job, self.token, self.before)

    def _stage_status(self, sid: str) -> dict[str, Any] | None:
        path = text_stage.stage_path(self.ctx, sid) / "stage.json"
        return current_stage_status(self.ctx, sid, self.token, self.before.get(path))


def _options(spec: UnitResources, gpus_available: bool, max_retries: int) -> dict[str, Any]:
    """Ray task options for units of one kind."""
    gpus = spec.gpus if spec.gpus is not None else (1 if gpus_available else 0)
    return {"num_cpus": spec.cpus, "num_gpus": gpus, "max_retries": max_retries,
            "retry_exceptions": False}
