"""What runs inside a Ray worker for ``--executor ray`` (the driver is ``ray_executor.py``).

A worker needs no shared folder. It gets from the driver, through Ray's object store: the
plan, the corpus and folds as the driver read them, with the transcripts of any speech
recogniser (:class:`RunSnapshot`); the audio features of the featurizers its unit reads (one
object per featurizer, shared by the tasks of a node); and, for a job reading a staged text
encoder, the stage's files as the driver put them once the stage was recorded. It runs the
unit in a scratch folder of its own and returns the unit's files (``jobs/<id>/`` or
``stages/<id>/``) for the driver to write into the run folder.
Text encoders, tokenizers and frozen text outputs are built on the worker's node, into its
own cache folder (the recipe's ``cache_dir``, or the default). Every start is logged at once
through the driver's :class:`WorkLogWriter`, so a worker lost mid-unit still leaves its
start in ``work.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoplug.files import write_json_atomic
from emoplug.recipe import Plan
from emoplug.train import text_stage, work_log
from emoplug.train.context import FeatureArrays, RunContext
from emoplug.train.job_files import job_dir, write_outcome
from emoplug.train.job_log import JobLog
from emoplug.train.progress import Progress
from emoplug.train.unit_work import fine_tune_stage, make_accelerator, stage_failure, train_jobs
from emoplug.train.units import Unit
from emoplug.types import Corpus, Fold

#: files a unit's folder is complete with; the driver writes them last
RESULT_FILES = ("result.json", "stage.json")


@dataclass
class RunSnapshot:
    """What every unit of a run reads, sent once: the plan, the corpus and folds, the launch
    token, the threads each unit uses (those of the driver's process) and the transcripts of
    the speech recognisers the text encoders read (by recogniser cache key)."""

    plan: Plan
    corpus: Corpus
    folds: list[Fold]
    token: str
    threads: int
    transcripts: dict[str, Any]


class WorkLogWriter:
    """Appends the events of workers to the run's ``work.log`` (a Ray actor on the driver's
    node, where the run folder is)."""

    def __init__(self, run_dir: str, token: str):
        self.run_dir, self.token = Path(run_dir), token

    def note(self, process: str, event: str, unit: str, **details: object) -> None:
        work_log.append(self.run_dir, process, self.token, 0, event, unit, **details)


def process_name() -> str:
    """This process as ``work.log`` names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


_contexts: dict[str, RunContext] = {}


def _context(snapshot: RunSnapshot, features: list[FeatureArrays]) -> RunContext:
    """This worker's context for the run (kept between its tasks of the same launch), its
    scratch folder as output folder, serving the shipped features."""
    ctx = _contexts.get(snapshot.token)
    if ctx is None:
        _contexts.clear()  # one run at a time per worker
        scratch = Path(tempfile.mkdtemp(prefix=f"emoplug-ray-{snapshot.token}-"))
        ctx = RunContext(snapshot.plan, scratch, loaded=(snapshot.corpus, snapshot.folds))
        ctx.adopt_transcripts(snapshot.transcripts)
        _contexts[snapshot.token] = ctx
    for shipped in features:
        for config in audio_configs(snapshot.plan):
            if ctx.features(config).featurizer.cache_key() == shipped.key:
                ctx.adopt_features(config, shipped)
                break
    return ctx


def audio_configs(plan: Plan) -> list[dict[str, Any]]:
    """The distinct audio featurizer configs of ``plan``'s cells."""
    configs = {json.dumps(c.config["audio"], sort_keys=True): c.config["audio"]
               for c in plan.cells if c.config["audio"] is not None}
    return list(configs.values())


def run_unit(snapshot: RunSnapshot, unit: Unit, stage: dict[str, Any] | None,
             log: Any, *features: FeatureArrays) -> dict[str, Any]:
    """Run ``unit`` here; returns ``{"process": host:pid, "files": {unit folder:
    {relative path: bytes}}, "statuses": {unit name: status}}``. ``stage``: what the task of
    the stage the unit reads returned (or the driver packed from a finished stage)."""
    import ray
    import torch

    torch.set_num_threads(snapshot.threads)
    process = process_name()
    for name in unit.names:
        ray.get(log.note.remote(process, "start", name))
    ctx = _context(snapshot, list(features))
    accelerator = make_accelerator(snapshot.plan.recipe.train.mixed_precision, [])
    if unit.kind == "stage":
        return _run_stage(ctx, snapshot, unit, accelerator, process)
    return _run_jobs(ctx, snapshot, unit, stage, accelerator, process)


def _run_stage(ctx: RunContext, snapshot: RunSnapshot, unit: Unit, accelerator: Any,
               process: str) -> dict[str, Any]:
    sid = unit.stage
    folder = text_stage.stage_path(ctx, sid)
    shutil.rmtree(folder, ignore_errors=True)  # a retry starts clean
    info = fine_tune_stage(ctx, sid, unit.jobs[0], accelerator, False, snapshot.token)
    if info["status"] != "done":
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "stage.json", info)
    files = pack_folder(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return {"process": process, "files": {f"stages/{sid}": files},
            "statuses": {unit.names[0]: info["status"]}}


def _run_jobs(ctx: RunContext, snapshot: RunSnapshot, unit: Unit, stage: dict[str, Any] | None,
              accelerator: Any, process: str) -> dict[str, Any]:
    jobs = list(unit.jobs)
    quiet = Progress(ctx.output_dir, [], [], -1, main=False)
    status: dict[str, Any] = {"status": "done"}
    if unit.stage is not None:
        folder = text_stage.stage_path(ctx, unit.stage)
        if not (folder / "stage.json").exists():
            unpack_folder((stage or {}).get("files", {}).get(f"stages/{unit.stage}", {}), folder)
        status = text_stage.stage_status(ctx, unit.stage) or {
            "status": "failed", "error": "the stage's files did not reach this worker"}
    for job in jobs:
        shutil.rmtree(job_dir(ctx.output_dir, job), ignore_errors=True)  # a retry starts clean
    if status.get("status") != "done":
        outcomes = {job.id: stage_failure(job, status) for job in jobs}
        logs = []
    else:
        logs = [JobLog(ctx.output_dir, job, ctx.plan.train_settings(job.cell).epochs, True,
                       quiet) for job in jobs]
        outcomes = train_jobs(ctx, jobs, accelerator, False, logs)
    for log in logs:
        log.close(outcomes[log.job.id].result)
    files, statuses = {}, {}
    host, _, pid = process.rpartition(":")
    for job in jobs:
        result = outcomes[job.id].result
        result["launch"] = snapshot.token
        result["process"] = {"index": 0, "count": 1, "executor": "ray", "host": host,
                             "pid": int(pid)}
        write_outcome(ctx, job, outcomes[job.id])
        folder = job_dir(ctx.output_dir, job)
        files[f"jobs/{job.id}"] = pack_folder(folder)
        statuses[job.id] = result["status"]
        shutil.rmtree(folder, ignore_errors=True)
    return {"process": process, "files": files, "statuses": statuses}


def pack_folder(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: relative path -> bytes."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack_folder(files: dict[str, bytes], folder: Path) -> None:
    """Write ``files`` (from :func:`pack_folder`) under ``folder``, each whole (a temporary
    file renamed into place); ``result.json``/``stage.json`` last, so a reader sees a
    complete unit or none."""
    folder.mkdir(parents=True, exist_ok=True)
    for relative in sorted(files, key=lambda r: r in RESULT_FILES):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(files[relative])
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
