"""What a run did, whichever executor ran it: :class:`RunSummary`, and the one-reason stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emoplug.errors import EmoplugError
from emoplug.train.progress import Progress, Totals


@dataclass
class RunSummary:
    """What one process did (``done``/``failed``: job ids it ran; ``skipped``: already done).
    On the main process ``totals`` counts the whole run's jobs from disk (every process's);
    ``workers_ok`` is False when a worker started by ``--workers`` exited with an error."""

    output_dir: Path
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: int = 0
    seconds: float = 0.0
    totals: Totals | None = None
    workers_ok: bool = True
    executor: str = "local"

    @property
    def ok(self) -> bool:
        """No job failed, in this process or (on the main process) in the whole run."""
        failed = self.totals.failed if self.totals is not None else len(self.failed)
        return not failed and not self.failed and self.workers_ok


class OneReasonFailure(EmoplugError):
    """Every job of a run failed with one error: a problem of the recipe or the data, told
    once instead of once per job."""


def raise_if_one_reason(progress: Progress) -> None:
    """Stop the run when every job so far failed with one error (see ``Failures``)."""
    error = progress.one_reason()
    if error is not None:
        raise OneReasonFailure(
            f"every job so far ({progress.totals.failed}, of "
            f"{len(progress.failures.cells[error])} cells) failed with: {error}; "
            "stopped: fix that and run the same command again (finished jobs are "
            "kept, failed ones are retried)")
