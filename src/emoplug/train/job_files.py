"""A job's folder: ``jobs/<id>/`` holds ``config.json``, TensorBoard events (``tb/``),
``predictions.csv``, ``model/`` (``train.save: best``) and, last and atomically,
``result.json``, whose ``status: done`` marks the job finished for every later run.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from emoplug.data.loading import data_record
from emoplug.files import read_json, write_json_atomic
from emoplug.recipe import Job
from emoplug.train.context import RunContext
from emoplug.train.loop import Outputs
from emoplug.train.outcome import JobOutcome
from emoplug.types import AVD_NAMES, Decoded


def job_dir(output_dir: Path, job: Job) -> Path:
    return output_dir / "jobs" / job.id


def job_finished(output_dir: Path, job: Job) -> bool:
    """Whether the job's ``result.json`` says ``done``."""
    result = read_json(job_dir(output_dir, job) / "result.json")
    return result is not None and result.get("status") == "done"


def write_outcome(ctx: RunContext, job: Job, outcome: JobOutcome) -> None:
    """Write the job's predictions and saved model, then ``result.json``. A model that cannot
    be saved turns the outcome into a failure (the metrics are kept; a re-run retries)."""
    folder = job_dir(ctx.output_dir, job)
    folder.mkdir(parents=True, exist_ok=True)
    if outcome.predictions is not None:
        write_predictions(folder / "predictions.csv", *outcome.predictions, ctx.labels,
                          {i: u.speaker for i, u in ctx.by_id.items()})
    if outcome.model is not None and ctx.plan.recipe.train.save == "best":
        from emoplug.train.saving import save_model

        try:
            save_model(folder / "model", ctx, job, outcome.model, outcome.approach)
        except Exception as exc:
            outcome.result.update(status="failed", error=f"saving the model failed: "
                                  f"{type(exc).__name__}: {exc}".splitlines()[0])
    outcome.result.setdefault("data", data_record(ctx.corpus))
    write_json_atomic(folder / "result.json", outcome.result)


def write_predictions(path: Path, out: Outputs, decoded: Decoded, labels: list[str],
                      speakers: Mapping[str, str]) -> None:
    """``predictions.csv``: id, speaker, gold, predicted, per-class scores, gold/predicted AVD
    (the speaker lets the report score each test speaker)."""
    header = ["id", "speaker", "gold", "predicted", *[f"p_{c}" for c in labels],
              *[f"gold_{d}" for d in AVD_NAMES], *[f"pred_{d}" for d in AVD_NAMES]]
    order = np.argsort(out.ids, kind="stable")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in order:
            gold = int(out.targets.labels[i])
            row = [out.ids[i], speakers.get(out.ids[i], ""), labels[gold] if gold >= 0 else "",
                   labels[int(decoded.labels[i])]]
            row += ([f"{p:.6f}" for p in decoded.probs[i]] if decoded.probs is not None
                    else [""] * len(labels))
            row += [_num(v) for v in out.targets.avd[i].tolist()]
            row += ([_num(v) for v in decoded.avd[i]] if decoded.avd is not None else [""] * 3)
            writer.writerow(row)


def _num(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6f}"
