"""The console while ``emoplug run`` works: a progress bar and one line per finished job."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from emoplug.recipe import Job

RECOUNT_SECONDS = 5.0


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
