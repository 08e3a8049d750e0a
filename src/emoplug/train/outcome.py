"""A job's outcome: what its ``result.json`` records, and the trained objects written beside it.

:class:`JobOutcome` carries the result record plus what the runner writes to other files
(the test predictions, the trained network and fitted approach for ``train.save: best``).
:func:`done` and :func:`failure` build the record of a finished and of a failed job.
"""

from __future__ import annotations

import platform
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import emoplug
from emoplug.recipe import Job, transcribed

if TYPE_CHECKING:
    from emoplug.components import Approach
    from emoplug.train.build import JobModel
    from emoplug.train.context import RunContext
    from emoplug.train.data import Example
    from emoplug.train.inputs import JobInputs
    from emoplug.train.loop import FitResult, Outputs
    from emoplug.train.model import CellModel
    from emoplug.types import Decoded

RESULT_VERSION = 1

#: a job's evaluation: outputs and decoded predictions per split, and the metrics record
Evaluated = tuple[dict[str, "Outputs"], dict[str, "Decoded"], dict[str, Any]]


@dataclass
class JobOutcome:
    """How a job ended. ``result`` is what ``result.json`` holds (``status`` done or failed);
    a finished job also carries its test ``predictions`` (outputs, decoded), its trained
    ``model`` and its fitted ``approach``."""

    result: dict[str, Any]
    predictions: tuple[Outputs, Decoded] | None = None
    model: CellModel | None = None
    approach: Approach | None = None

    @property
    def ok(self) -> bool:
        return self.result["status"] == "done"


def done(ctx: RunContext, job: Job, inputs: JobInputs, built: JobModel, fitted: FitResult,
         evaluated: Evaluated, timings: dict[str, float], accelerator: Any,
         cohort: int) -> JobOutcome:
    """The outcome of a job that trained and was evaluated (``cohort``: jobs trained with it
    in lockstep, itself included)."""
    outputs, decoded, metrics = evaluated
    fold = ctx.folds[job.fold]
    result = {
        "status": "done",
        "result_version": RESULT_VERSION,
        "job": job.id,
        "cell": job.cell.id,
        "cell_label": job.cell.label,
        "names": {"text": job.cell.text, "audio": job.cell.audio, "fusion": job.cell.fusion,
                  "approach": job.cell.approach, "protocol": job.cell.protocol},
        "modalities": list(job.cell.modalities),
        "fold": job.fold,
        "seed": job.seed,
        "text_mode": inputs.mode,
        "stage": inputs.stage,
        "audio_mode": inputs.audio_mode,
        "audio_stage": inputs.audio_stage,
        "control": job.cell.control,
        "protocol": {**ctx.plan.protocol_of(job.cell),
                     **{k: v for k, v in fold.meta.items()
                        if isinstance(v, (str, int, float, bool))}},
        "audit": fold.meta.get("audit"),
        "labels": ctx.labels,
        "label_counts": {name: label_counts(ex, len(ctx.labels))
                         for name, ex in inputs.splits.items()},
        "avd_scale": list(ctx.corpus.avd_scale),
        "metrics": metrics,
        "model": built.record,
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "dev_loss": fitted.best_dev_loss,
        "history": fitted.history,
        "stopping": fitted.stopping,
        "sizes": {name: len(ex) for name, ex in inputs.splits.items()},
        "dropped": inputs.dropped,
        "timings": timings,
        "cohort": cohort,
        "device": str(accelerator.device),
        "threads": _threads(),
        "process": {"index": ctx.rank, "count": ctx.world},
        "mixed_precision": ctx.plan.recipe.train.mixed_precision,
        "versions": versions(),
    }
    if transcribed(job.cell):  # absent for gold transcripts: results stay as they were
        result["transcripts"] = transcript_record(ctx, job, inputs)
    return JobOutcome(result, (outputs["test"], decoded["test"]), built.model, built.approach)


def transcript_record(ctx: RunContext, job: Job, inputs: JobInputs) -> dict[str, Any]:
    """How good the speech recogniser's transcripts of the job's splits are: per split, the
    word error rate against the corpus's gold transcripts (None where no utterance of the
    split has one)."""
    from emoplug.data.transcripts import word_error_rate

    asr = ctx.transcripts(job.cell.config["text"])
    wer = {}
    for name, examples in inputs.splits.items():
        gold = [(ctx.by_id[e.id].text, asr[e.id]) for e in examples if ctx.by_id[e.id].text]
        wer[name] = word_error_rate([g for g, _ in gold], [h for _, h in gold])
    return {"source": "asr", "asr": job.cell.config["text"]["asr"], "wer": wer}


def failure(job: Job, exc: BaseException, seconds: float,
            traceback_text: str | None = None) -> JobOutcome:
    """The outcome of a job that raised after ``seconds`` of work (``traceback_text``: the
    traceback, when it was formatted before ``exc`` let go of it)."""
    return JobOutcome({
        "status": "failed", "result_version": RESULT_VERSION, "job": job.id,
        "cell": job.cell.id, "cell_label": job.cell.label, "fold": job.fold,
        "seed": job.seed, "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
        "traceback": traceback_text or "".join(traceback.format_exception(exc)),
        "timings": {"total_s": seconds}, "versions": versions()})


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def label_counts(examples: list[Example], n_labels: int) -> list[int]:
    """Labelled examples per class index (a permutation of the targets leaves these as the
    gold counts)."""
    labels = np.array([e.label for e in examples], dtype=np.int64)
    return np.bincount(labels[labels >= 0], minlength=n_labels).tolist()


def versions() -> dict[str, str]:
    """The versions a result was produced with."""
    import torch
    import transformers

    return {"emoplug": emoplug.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}
