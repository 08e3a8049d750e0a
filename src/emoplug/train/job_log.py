"""A job's log while it trains: ``config.json``, TensorBoard scalars per epoch and, at the
end, the resolved config and test metrics for TensorBoard's HPARAMS tab."""

from __future__ import annotations

import time
from typing import Any

from emoplug.files import write_json_atomic
from emoplug.recipe import Job
from emoplug.train.job_files import job_dir
from emoplug.train.progress import Progress


class JobLog:
    """A job's folder, ``config.json`` and TensorBoard writer (with ``write``: the process
    that writes the job's files) and its progress lines."""

    def __init__(self, output_dir: Any, job: Job, epochs: int, write: bool, progress: Progress):
        self.job, self.epochs, self.progress = job, epochs, progress
        self.started = time.perf_counter()
        self.writer = None
        self.on_batch = progress.batches(f"{job.cell.label} fold={job.fold} seed={job.seed}")
        if write:
            folder = job_dir(output_dir, job)
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / "config.json", job.resolved_config())
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tb"))

    def on_epoch(self, epoch: int, record: dict[str, float]) -> None:
        job, progress = self.job, self.progress
        dev = record.get("dev_loss")  # none for a refit without dev (inner folds)
        if self.writer is not None:
            self.writer.add_scalar("loss/train", record["train_loss"], epoch)
            if dev is not None:
                self.writer.add_scalar("loss/dev", dev, epoch)
            self.writer.add_scalar("lr", record["lr"], epoch)
        if progress.verbosity >= 2:
            progress.line(f"    {job.cell.label} fold={job.fold} seed={job.seed} epoch {epoch}: "
                          f"train {record['train_loss']:.4f}"
                          + (f" dev {dev:.4f}" if dev is not None else ""))

    def close(self, result: dict[str, Any]) -> None:
        """Log the hyperparameters and test metrics, and close the event file."""
        if self.writer is not None:
            _log_hparams(self.writer, self.job, result)
            self.writer.close()


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
