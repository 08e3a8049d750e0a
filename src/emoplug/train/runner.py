"""``emoplug run``: plan -> feature cache -> text stages -> head jobs, resumable and sharded.

Under ``accelerate launch --num_processes N`` every process runs this same function. With
``train.strategy: jobs`` (default) processes *claim* units of work (a text stage or a job) by
creating a claim file, so a process that finishes early takes more work instead of idling, and
processes on several nodes can share one output folder. With ``train.strategy: ddp`` all
processes run every job together, data-parallel. A finished job (its ``result.json`` says
``done``) is never run again; a failed one is retried on the next run.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from emoplug.data.loading import data_record
from emoplug.errors import EmoplugError
from emoplug.recipe import Job, Plan
from emoplug.train import text_stage
from emoplug.train.cohort import group_cohorts
from emoplug.train.context import RunContext
from emoplug.train.packed import device_inputs_mode

POLL_SECONDS = 2.0
RECOUNT_SECONDS = 5.0


@dataclass
class RunSummary:
    """What one process did (``done``/``failed``: job ids it ran; ``skipped``: already done)."""

    output_dir: Path
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: int = 0
    seconds: float = 0.0


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def job_finished(output_dir: Path, job: Job) -> bool:
    result = read_result(output_dir / "jobs" / job.id / "result.json")
    return result is not None and result.get("status") == "done"


class Claims:
    """Exclusive claims on units of work for one launch (files created with O_EXCL).

    Claims live under ``<run>/claims/<launch token>/``; a new launch has a new token, so the
    claims of a killed launch never block a re-run."""

    def __init__(self, output_dir: Path, token: str, enabled: bool):
        self.token = token
        self.root = output_dir / "claims" / token
        self.enabled = enabled
        if enabled:
            self.root.mkdir(parents=True, exist_ok=True)

    def take(self, unit: str) -> bool:
        if not self.enabled:
            return True
        try:
            os.close(os.open(self.root / unit, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False


def _launch_token(state: Any) -> str:
    """A token shared by all processes of this launch (rank 0 draws it)."""
    token = [uuid.uuid4().hex[:12]]
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(token, from_process=0)
    return token[0]


class Progress:
    """A progress bar over the pending jobs on the main process (counting every process's
    finished jobs) plus one line per job this process finishes."""

    def __init__(self, output_dir: Path, pending: list[Job], verbosity: int, main: bool):
        self.verbosity = verbosity if main else min(verbosity, 1)
        self.results = [output_dir / "jobs" / j.id / "result.json" for j in pending]
        self.counted_at = time.monotonic()
        self.bar = None
        if main and verbosity >= 1 and pending:
            from tqdm import tqdm

            self.bar = tqdm(total=len(pending), unit="job", dynamic_ncols=True, file=sys.stderr)

    def line(self, text: str) -> None:
        if self.verbosity < 1:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def epoch(self, job: Job, epoch: int, epochs: int) -> None:
        """Show the running job's epoch beside the bar (long jobs stay visibly alive)."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{job.cell.label} fold={job.fold} epoch {epoch}/{epochs}")

    def advance(self) -> None:
        """Count this process's job; recount everyone's from disk at most every few seconds
        (one stat per pending job, so not after every job of a large grid)."""
        if self.bar is None:
            return
        now = time.monotonic()
        if now - self.counted_at < RECOUNT_SECONDS:
            self.bar.update(1)
            return
        self.counted_at = now
        self.bar.n = sum(path.exists() for path in self.results)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def warm_feature_cache(plan: Plan, ctx: RunContext | None = None, rank: int = 0,
                       world: int = 1, verbose: bool = False) -> dict[str, int]:
    """Compute every audio feature the plan needs that the cache lacks (this rank's share of
    the utterances). Returns ``{featurizer cache key: features computed}``."""
    from emoplug.data.features import featurize_corpus

    if ctx is None:
        from accelerate import PartialState

        state = PartialState()
        rank, world = state.process_index, state.num_processes
        ctx = RunContext(plan, plan.output_dir())
    configs = {json.dumps(c.config["audio"], sort_keys=True): c.config["audio"]
               for c in plan.cells if c.config["audio"] is not None}
    utterances = [u for u in ctx.corpus.utterances if u.audio][rank::world]
    computed: dict[str, int] = {}
    for config in configs.values():
        store = ctx.features(config)
        before = ctx.cache.stats.writes
        done = featurize_corpus(store.featurizer, utterances, ctx.cache,
                                progress=verbose and rank == 0)
        store.failed.update(done.skipped)
        computed[store.featurizer.cache_key()] = ctx.cache.stats.writes - before
        if done.skipped:
            first = next(iter(done.skipped.values()))
            print(f"emoplug: {config['type']}: {len(done.skipped)} utterances have unreadable "
                  f"audio and are skipped (first: {first})", file=sys.stderr)
        if verbose:
            key = store.featurizer.cache_key()
            print(f"{config['type']}: {computed[key]} computed, "
                  f"{len(done.refs) - computed[key]} already cached", file=sys.stderr)
    return computed


def _write_job(ctx: RunContext, job: Job, result: dict[str, Any]) -> None:
    from emoplug.train.job import job_dir, write_predictions

    folder = job_dir(ctx, job)
    predictions = result.pop("_predictions", None)
    model = result.pop("_model", None)
    approach = result.pop("_approach", None)
    if predictions is not None:
        write_predictions(folder / "predictions.csv", *predictions, ctx.labels)
    if model is not None and ctx.plan.recipe.train.save == "best":
        from emoplug.train.saving import save_model

        try:
            save_model(folder / "model", ctx, job, model, approach)
        except Exception as exc:  # keep the metrics; a re-run retries the job and its save
            result.update(status="failed", error=f"saving the model failed: "
                          f"{type(exc).__name__}: {exc}".splitlines()[0])
    result.setdefault("data", data_record(ctx.corpus))
    text_stage.write_json_atomic(folder / "result.json", result)


class _JobLog:
    """A job's folder, ``config.json`` and TensorBoard writer while it trains (main process)."""

    def __init__(self, ctx: RunContext, job: Job, main: bool, progress: Progress):
        from emoplug.train.job import job_dir

        self.ctx, self.job, self.progress = ctx, job, progress
        self.started = time.perf_counter()
        self.writer = None
        if main:
            folder = job_dir(ctx, job)
            folder.mkdir(parents=True, exist_ok=True)
            text_stage.write_json_atomic(folder / "config.json", job.resolved_config())
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tb"))

    def on_epoch(self, epoch: int, record: dict[str, float]) -> None:
        job, progress = self.job, self.progress
        if self.writer is not None:
            self.writer.add_scalar("loss/train", record["train_loss"], epoch)
            self.writer.add_scalar("loss/dev", record["dev_loss"], epoch)
            self.writer.add_scalar("lr", record["lr"], epoch)
        progress.epoch(job, epoch, self.ctx.plan.recipe.train.epochs)
        if progress.verbosity >= 2:
            progress.line(f"    {job.cell.label} fold={job.fold} seed={job.seed} epoch {epoch}: "
                          f"train {record['train_loss']:.4f} dev {record['dev_loss']:.4f}")


def _execute(ctx: RunContext, jobs: list[Job], accelerator: Any, ddp: bool, main: bool,
             progress: Progress, summary: RunSummary) -> None:
    """Run one job, or one cohort of jobs in lockstep; record each (failures included) and
    tell the plugins."""
    from emoplug.train.job import failure, run_cohort, run_job

    logs = [_JobLog(ctx, job, main, progress) for job in jobs]
    try:
        if len(jobs) == 1:
            try:
                results = {jobs[0].id: run_job(ctx, jobs[0], accelerator, ddp=ddp,
                                               on_epoch=logs[0].on_epoch)}
            except Exception as exc:  # recorded; the grid goes on
                spent = time.perf_counter() - logs[0].started
                results = {jobs[0].id: failure(jobs[0], exc, spent)}
        else:
            results = run_cohort(ctx, jobs, accelerator, {log.job.id: log.on_epoch
                                                          for log in logs})
    finally:
        if ddp:  # the prepared model and optimizer, on success or failure
            accelerator.free_memory()
    for log in logs:
        _finish_job(ctx, log, results[log.job.id], main, progress, summary)


def _finish_job(ctx: RunContext, log: _JobLog, result: dict[str, Any], main: bool,
                progress: Progress, summary: RunSummary) -> None:
    """Write a job's files, tell the plugins, count it and say how it went."""
    job = log.job
    if main:
        if log.writer is not None:
            _log_hparams(log.writer, job, result)
            log.writer.close()
        _write_job(ctx, job, result)
        ctx.registry.notify("emoplug_job_finished", job=job, result=result)
    status = result["status"]
    (summary.done if status == "done" else summary.failed).append(job.id)
    progress.advance()
    if status == "done":
        test = result["metrics"]["test"]
        scores = " ".join(f"{k.upper()}={test[k]:.3f}" for k in ("ua", "wa") if k in test)
        progress.line(f"done   {job.cell.label} fold={job.fold} seed={job.seed} {scores} "
                      f"({result['timings']['total_s']:.1f}s)")
    else:
        progress.line(f"FAILED {job.cell.label} fold={job.fold} seed={job.seed}: "
                      f"{result['error']}")


def _log_hparams(writer: Any, job: Job, result: dict[str, Any]) -> None:
    """The job's resolved config and test metrics for TensorBoard's HPARAMS tab, in the
    job's own event file (``add_hparams`` would open a second writer per job)."""
    from torch.utils.tensorboard.summary import hparams

    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix] = node
        elif node is None:
            flat[prefix] = "none"
        else:
            flat[prefix] = str(node)

    walk("", job.resolved_config())
    test = result.get("metrics", {}).get("test", {})
    scores = {f"test/{k}": float(v) for k, v in test.items() if isinstance(v, (int, float))}
    scores = scores or {"test/failed": 1.0}
    for summary in hparams(flat, scores):
        writer.file_writer.add_summary(summary)
    for name, value in scores.items():
        writer.add_scalar(name, value)


def _order_jobs(jobs: list[Job], stage_of: Callable[[Job], str | None]) -> list[Job]:
    """Jobs grouped by the text stage they read, so one stage's outputs are loaded at a time."""
    return sorted(jobs, key=lambda j: (stage_of(j) or "", j.cell.id, j.fold, j.seed))


@dataclass(frozen=True)
class Worker:
    """This process's place among local workers started by ``emoplug run --workers N``."""

    rank: int
    world: int
    token: str

    ENV: ClassVar[str] = "EMOPLUG_WORKER"

    def to_env(self) -> str:
        return f"{self.rank},{self.world},{self.token}"

    @classmethod
    def from_env(cls) -> Worker | None:
        raw = os.environ.get(cls.ENV)
        if not raw:
            return None
        rank, world, token = raw.split(",")
        return cls(int(rank), int(world), token)


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
        token = worker.token if worker else _launch_token(accelerator.state)
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
        previous = read_result(out / "plan.json") or {}
        audit, data = previous.get("audit", {}), previous.get("data")
    text_stage.write_json_atomic(out / "plan.json", {
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
                text_stage.write_json_atomic(path / "stage.json", {
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
    from emoplug.train.job import failure

    exc = RuntimeError(f"text stage failed: {status.get('error', 'unknown error')}")
    result = failure(job, exc, 0.0)
    if main:
        (ctx.output_dir / "jobs" / job.id).mkdir(parents=True, exist_ok=True)
        _write_job(ctx, job, result)
    summary.failed.append(job.id)
    progress.advance()
    progress.line(f"FAILED {job.cell.label} fold={job.fold} seed={job.seed}: {result['error']}")


def run_with_workers(plan: Plan, argv: list[str], workers: int,
                     output_dir: str | os.PathLike | None, verbosity: int) -> bool:
    """Run ``plan`` in ``workers`` local processes sharing the jobs through claim files:
    this process is worker 0 and starts the others with the same command line (``argv``).
    Each gets ``cores // workers`` threads. Returns True when every worker succeeded."""
    import subprocess

    import torch

    token = uuid.uuid4().hex[:12]
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    children = [subprocess.Popen([sys.executable, "-m", "emoplug", *argv],
                                 env={**env, Worker.ENV: Worker(r, workers, token).to_env()})
                for r in range(1, workers)]
    torch.set_num_threads(threads)
    try:
        summary = run_plan(plan, output_dir, verbosity, Worker(0, workers, token))
    finally:
        codes = [child.wait() for child in children]
    return not summary.failed and all(code == 0 for code in codes)
