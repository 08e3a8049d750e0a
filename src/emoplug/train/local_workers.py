"""``emoplug run --workers N``: start the local worker processes and run this one's share."""

from __future__ import annotations

import os
import subprocess
import sys

from emoplug.recipe import Plan
from emoplug.train.leases import new_token
from emoplug.train.run_summary import RunSummary
from emoplug.train.runner import run_plan
from emoplug.train.signals import stop_children, stop_on_signals
from emoplug.train.workers import Worker


def run_with_workers(plan: Plan, argv: list[str], workers: int,
                     output_dir: str | os.PathLike | None, verbosity: int) -> RunSummary:
    """Run ``plan`` in ``workers`` local processes sharing its units through leases: this
    process is worker 0 and starts the others with the same command line (``argv``) and
    this process's thread settings. A signal to this process stops them all
    (``signals.py``). Returns worker 0's summary, its ``totals`` counting every worker's
    jobs and ``workers_ok`` whether every other worker exited cleanly."""
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
