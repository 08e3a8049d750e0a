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


@dataclass(frozen=True, eq=False)
class Predictions:
    """One job's test predictions with a gold label, in file order (sorted by id); compared
    by identity (one object per unchanged file, see ``read_predictions``)."""

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


def _fold_resamples(gold: np.ndarray, predicted: list[np.ndarray], drawn: np.ndarray
                    ) -> np.ndarray:
    """A fold's UA in each resample, averaged over its seeds: ``gold`` and each seed's
    ``predicted`` labels of the fold's test utterances, ``drawn`` the utterances each resample
    drew (resamples × utterances, indices). A resample's UA is the mean recall over the
    classes it holds."""
    classes, codes = np.unique(gold, return_inverse=True)
    k, resamples = len(classes), drawn.shape[0]
    slots = (np.arange(resamples)[:, None] * k + codes[drawn]).ravel()  # (resample, class)
    support = np.bincount(slots, minlength=resamples * k).reshape(resamples, k)
    per_seed = []
    for labels in predicted:
        right = (labels == gold)[drawn].ravel()
        correct = np.bincount(slots[right], minlength=resamples * k).reshape(resamples, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(support > 0, correct / np.maximum(support, 1), np.nan)
        per_seed.append(np.nanmean(recall, axis=1))
    return np.mean(per_seed, axis=0)


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
    by_fold: dict[str, list[Predictions]] = {}
    for job in sorted(cell.done, key=lambda j: (j.fold, j.seed)):
        predictions = read_predictions(run, job)
        if predictions is not None:
            by_fold.setdefault(job.fold, []).append(predictions)
    if not by_fold:
        return None
    return _interval(tuple((fold, tuple(by_fold[fold])) for fold in sorted(by_fold)),
                     resamples, seed)


@lru_cache(maxsize=1024)
def _interval(folds: tuple[tuple[str, tuple[Predictions, ...]], ...], resamples: int,
              seed: int) -> Interval:
    """``bootstrap_ua`` of the folds' predictions (cached: the Markdown table and cells.csv
    ask for the same intervals)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for _, jobs in folds:
        shared = sorted(set.intersection(*(set(p.ids) for p in jobs)))
        positions = [{i: k for k, i in enumerate(p.ids)} for p in jobs]
        rows = [[where[i] for i in shared] for where in positions]
        drawn = rng.integers(0, len(shared), size=(resamples, len(shared)))
        total += _fold_resamples(jobs[0].gold[rows[0]],
                                 [p.predicted[r] for p, r in zip(jobs, rows, strict=True)],
                                 drawn)
    low, high = np.nanpercentile(total / len(folds), [2.5, 97.5])
    return Interval(float(low), float(high), resamples)
