"""``emoplug run --workers N``: local processes sharing one run's units through leases, and
the threads each process uses."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from emoplug.errors import EmoplugError
from emoplug.recipe import Plan
from emoplug.train.leases import new_token

if TYPE_CHECKING:
    from emoplug.train.runner import RunSummary

THREADS_ENV = "EMOPLUG_THREADS"


@dataclass(frozen=True)
class Worker:
    """This process's place among local workers started by ``emoplug run --workers N``
    (``parent``: the main process's id, 0 for the main process itself)."""

    rank: int
    world: int
    token: str
    parent: int = 0

    ENV: ClassVar[str] = "EMOPLUG_WORKER"

    def to_env(self) -> str:
        return f"{self.rank},{self.world},{self.token},{self.parent}"

    @classmethod
    def from_env(cls) -> Worker | None:
        raw = os.environ.get(cls.ENV)
        if not raw:
            return None
        rank, world, token, parent = raw.split(",")
        return cls(int(rank), int(world), token, int(parent))


def threads_per_process(workers: int, requested: int | None) -> int:
    """Threads of each process: ``requested`` (``--threads``), else ``EMOPLUG_THREADS``, else
    1 on a CPU (OpenMP threads that spin while another process holds a core collapse under
    load), else the cores shared among the workers (a GPU does the heavy work)."""
    if requested is None and os.environ.get(THREADS_ENV):
        raw = os.environ[THREADS_ENV]
        if not raw.isdigit() or int(raw) < 1:
            raise EmoplugError(f"{THREADS_ENV}={raw!r} is not a positive whole number")
        requested = int(raw)
    if requested is not None:
        return requested
    import torch

    on_cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU")
    return 1 if on_cpu else max(1, (os.cpu_count() or 1) // workers)


def use_threads(threads: int) -> None:
    """Set this process's intra-op threads, and those of processes it starts."""
    import torch

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)


def run_with_workers(plan: Plan, argv: list[str], workers: int,
                     output_dir: str | os.PathLike | None, verbosity: int) -> RunSummary:
    """Run ``plan`` in ``workers`` local processes sharing its units through leases: this
    process is worker 0 and starts the others with the same command line (``argv``) and
    this process's thread settings. A signal to this process stops them all
    (``signals.py``). Returns worker 0's summary, its ``totals`` counting every worker's
    jobs and ``workers_ok`` whether every other worker exited cleanly."""
    from emoplug.train.runner import run_plan
    from emoplug.train.signals import stop_children, stop_on_signals

    token = new_token()
    children = [subprocess.Popen(
        [sys.executable, "-m", "emoplug", *argv],
        env={**os.environ, Worker.ENV: Worker(r, workers, token, os.getpid()).to_env()})
        for r in range(1, workers)]
    stop_on_signals(children)
    try:
        summary = run_plan(plan, output_dir, verbosity, Worker(0, workers, token))
    except BaseException:
        stop_children(children)
        raise
    summary.workers_ok = all(child.wait() == 0 for child in children)
    return summary
