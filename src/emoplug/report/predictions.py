"""The utterance-level results of a run: each finished job's ``predictions.csv`` (id, speaker,
gold and predicted label), the UA of any group of its utterances, and bootstrap intervals.

The fold-level statistics (``stats``) say how much a score moves between test sessions; the
bootstrap here says how much it moves with the particular test utterances drawn
(Efron & Tibshirani 1993): a cell's test utterances are resampled with replacement **within each
fold** (a fold keeps its size and its test speakers), the cell's UA is recomputed as the
reports computes it (UA per job, seeds averaged within each fold, then the mean over folds),
``BOOTSTRAP_RESAMPLES`` times from a fixed seed, and the 2.5th and 97.5th percentiles are the
95% interval.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from emoplug.report.collect import CellRecord, JobRecord, RunData

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Predictions:
    """One job's test predictions with a gold label, in file order (sorted by id)."""

    ids: tuple[str, ...]
    speakers: tuple[str, ...] | None  # None: a file written before the speaker column
    gold: np.ndarray  # label strings
    predicted: np.ndarray


def read_predictions(run: RunData, job: JobRecord) -> Predictions | None:
    """The job's ``predictions.csv``; None when it is absent, empty or has no gold column."""
    path = run.path / "jobs" / job.id / "predictions.csv"
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4096)
def _read(path: Path, mtime_ns: int, size: int) -> Predictions | None:
    """``path`` parsed, cached by its modification time and size (a rewritten file is read
    again)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (FileNotFoundError, UnicodeDecodeError, csv.Error):
        return None
    rows = [r for r in rows if r.get("gold") and r.get("predicted")]
    if not rows:
        return None
    speakers = tuple(r["speaker"] for r in rows) if "speaker" in rows[0] else None
    return Predictions(tuple(r["id"] for r in rows), speakers,
                       np.array([r["gold"] for r in rows]),
                       np.array([r["predicted"] for r in rows]))


def unweighted_accuracy(gold: np.ndarray, predicted: np.ndarray) -> float:
    """UA: the mean recall over the classes present in ``gold`` (``nan`` when empty), as
    ``emoplug.metrics`` computes it."""
    recalls = [float(np.mean(predicted[gold == c] == c)) for c in np.unique(gold)]
    return float(np.mean(recalls)) if recalls else math.nan


def _resampled_ua(gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """UA of each resample, given each utterance's count in it (``weights``: resamples ×
    utterances): per class present, the weighted recall; classes a resample lacks are left
    out of its mean."""
    classes = np.unique(gold)
    members = (gold[:, None] == classes[None, :]).astype(float)  # utterances × classes
    hits = members * (predicted == gold)[:, None]
    support, correct = weights @ members, weights @ hits  # resamples × classes
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, correct / np.maximum(support, 1), np.nan)
    return np.nanmean(recall, axis=1)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    resamples: int


def bootstrap_ua(run: RunData, cell: CellRecord, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """The 95% percentile bootstrap interval of the cell's test UA (mean over folds of the
    seed-averaged fold UA), resampling each fold's test utterances within the fold; the
    seeds of a fold are scored on the same resample. None without predictions."""
    rng = np.random.default_rng(seed)
    by_fold: dict[str, list[Predictions]] = {}
    for job in sorted(cell.done, key=lambda j: (j.fold, j.seed)):
        predictions = read_predictions(run, job)
        if predictions is not None:
            by_fold.setdefault(job.fold, []).append(predictions)
    if not by_fold:
        return None
    total = np.zeros(resamples)
    for fold in sorted(by_fold):
        jobs = by_fold[fold]
        shared = sorted(set.intersection(*(set(p.ids) for p in jobs)))
        n = len(shared)
        weights = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(float)
        per_seed = []
        for p in jobs:
            row = {i: k for k, i in enumerate(p.ids)}
            keep = [row[i] for i in shared]
            per_seed.append(_resampled_ua(p.gold[keep], p.predicted[keep], weights))
        total += np.mean(per_seed, axis=0)
    means = total / len(by_fold)
    low, high = np.nanpercentile(means, [2.5, 97.5])
    return Interval(float(low), float(high), resamples)
