"""The console while ``emoplug run`` works, for the whole run whichever process did the work.

The main process shows one progress bar over the pending jobs and one line per finished
job or text stage, read from the records on disk (``result.json``, ``stage.json``) that any
process (a worker, another rank, another launch) writes: a watcher thread looks every few
seconds. A failure's line is also appended to ``<run>/failures.log`` by the process that
recorded it, and shown even with ``-q``. Other processes print nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoplug.files import read_json
from emoplug.recipe import Job

WATCH_SECONDS = 2.0
#: at most this often the bar's postfix is redrawn for a batch
POSTFIX_SECONDS = 0.5
FAILURES_LOG = "failures.log"

Stamp = tuple[int, int] | None


def stamp(path: Path) -> Stamp:
    """A file's identity now (inode, mtime): records are replaced whole, so a new one differs."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


@dataclass
class Totals:
    """The whole run's jobs recorded on disk while it ran: finished, and failed."""

    done: int = 0
    failed: int = 0


#: a run stops when this many jobs of at least ``ONE_REASON_CELLS`` cells have failed with
#: one and the same error and none has finished (a recipe or data problem, not a job's)
ONE_REASON_JOBS = 8
ONE_REASON_CELLS = 3


@dataclass
class Failures:
    """The run's failed jobs by error line (seen by the main process): the first of each
    error is shown, later ones are counted and summed up once at the end."""

    by_error: dict[str, int] = field(default_factory=dict)
    cells: dict[str, set[str]] = field(default_factory=dict)

    def add(self, result: dict[str, Any]) -> bool:
        """Count a failed job; True when its error is new (show its line)."""
        error = str(result.get("error"))
        self.by_error[error] = self.by_error.get(error, 0) + 1
        self.cells.setdefault(error, set()).add(str(result.get("cell")))
        return self.by_error[error] == 1

    def one_reason(self, done: int) -> str | None:
        """The error every failed job so far has failed with, when no job finished and it
        reached :data:`ONE_REASON_JOBS` jobs of :data:`ONE_REASON_CELLS` cells."""
        if done or len(self.by_error) != 1:
            return None
        (error, count), = self.by_error.items()
        if count >= ONE_REASON_JOBS and len(self.cells[error]) >= ONE_REASON_CELLS:
            return error
        return None

    def repeated(self) -> list[str]:
        """One line per error that failed more than one job."""
        return [f"{count - 1} more job(s) failed with the same error: {error}"
                for error, count in self.by_error.items() if count > 1]


def job_line(result: dict[str, Any]) -> str:
    """A finished or failed job in one line."""
    head = f"{result.get('cell_label')} fold={result.get('fold')} seed={result.get('seed')}"
    if result.get("status") != "done":
        return f"FAILED {head}: {result.get('error')} (jobs/{result.get('job')})"
    test = result["metrics"]["test"]
    scores = " ".join(f"{k.upper()}={test[k]:.3f}" for k in ("ua", "wa") if k in test)
    return f"done   {head} {scores} ({result['timings']['total_s']:.1f}s)"


def stage_line(info: dict[str, Any]) -> str:
    """A fine-tuned or failed text stage in one line."""
    control = f" control={info['control']}" if info.get("control") else ""
    head = f"{info.get('text', {}).get('type')} fold={info.get('fold')} seed={info.get('seed')}"
    if info.get("status") != "done":
        return f"FAILED stage {head}{control}: {info.get('error')}"
    return (f"stage  {head}{control}: encoder fine-tuned ({info['epochs_run']} epochs, "
            f"{info['total_s']:.1f}s)")


class Progress:
    """The console of one process of a run (see the module's docstring)."""

    def __init__(self, output_dir: Path, pending: list[Job], stages: list[Path],
                 verbosity: int, main: bool):
        self.main = main
        self.verbosity = verbosity if main else -1
        self.log = output_dir / FAILURES_LOG
        self.results = [output_dir / "jobs" / j.id / "result.json" for j in pending]
        self.watched = {path: stamp(path) for path in [*self.results, *stages]}
        self.seen: set[Path] = set()
        self.totals = Totals()
        self.failures = Failures()
        self.bar = None
        self.postfix_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if not main:
            return
        if verbosity >= 1 and pending:
            from tqdm import tqdm

            self.bar = tqdm(total=len(pending), unit="job", dynamic_ncols=True, file=sys.stderr)
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name="emoplug-progress")
        self._watcher.start()

    def line(self, text: str, level: int = 1) -> None:
        """Print a line above the bar when the verbosity reaches ``level``."""
        if self.verbosity < level:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def failure(self, text: str) -> None:
        """Keep a failure's line in ``failures.log`` (the main process also shows it, when
        it sees the failed record)."""
        with open(self.log, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")

    def postfix(self, text: str, force: bool = False) -> None:
        """Show what this process is working on beside the bar (batches at most every
        ``POSTFIX_SECONDS``)."""
        if self.bar is None:
            return
        now = time.monotonic()
        if force or now - self.postfix_at >= POSTFIX_SECONDS:
            self.postfix_at = now
            self.bar.set_postfix_str(text)

    def batches(self, label: str) -> Callable[[int, int, int, int], None]:
        """A callback showing ``label``'s batches beside the bar: (epoch, epochs, batch,
        batches)."""
        def on_batch(epoch: int, epochs: int, batch: int, batches: int) -> None:
            self.postfix(f"{label} epoch {epoch}/{epochs} batch {batch}/{batches}")
        return on_batch

    def refresh(self) -> None:
        """Look at the records on disk now (this process just wrote one)."""
        if self.main:
            self._look()

    def one_reason(self) -> str | None:
        """The error every job of the run failed with so far, once it is clearly not one
        job's problem (see :class:`Failures`); None otherwise, and in other processes."""
        with self._lock:
            return self.failures.one_reason(self.totals.done)

    def close(self) -> Totals:
        """Show the last records, close the bar; the whole run's totals."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._look()
        if self.bar is not None:
            self.bar.close()
        for line in self.failures.repeated():
            self.line(line, level=0)
        return self.totals

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            self._look()

    def _look(self) -> None:
        with self._lock:
            for path, before in self.watched.items():
                if path in self.seen or stamp(path) == before:
                    continue
                record = read_json(path)
                if record is None:
                    continue
                self.seen.add(path)
                ok = record.get("status") == "done"
                if path.name == "result.json":
                    if ok:
                        self.totals.done += 1
                    else:
                        self.totals.failed += 1
                    if self.bar is not None:
                        self.bar.update(1)
                    if ok or self.failures.add(record):
                        self.line(job_line(record), level=1 if ok else 0)
                else:
                    self.line(stage_line(record), level=1 if ok else 0)
