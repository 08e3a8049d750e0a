"""``emoplug run --workers N``: a process's place among the local workers that share one run's
units through leases, and the threads each process uses (``local_workers.py`` starts them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from emoplug.errors import EmoplugError

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

