"""``emoplug run --workers N``: local processes sharing one run's jobs through claims."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

from emoplug.recipe import Plan
from emoplug.train.claims import new_token


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


def run_with_workers(plan: Plan, argv: list[str], workers: int,
                     output_dir: str | os.PathLike | None, verbosity: int) -> bool:
    """Run ``plan`` in ``workers`` local processes sharing the jobs through claim files:
    this process is worker 0 and starts the others with the same command line (``argv``).
    Each gets ``cores // workers`` threads. Returns True when every worker succeeded."""
    import torch

    from emoplug.train.runner import run_plan

    token = new_token()
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
