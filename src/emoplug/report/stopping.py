"""How training ended, per cell: the cells that stopped at the epoch limit while their dev
loss was still falling (under-trained: raise ``train.epochs``), and those fitted with L-BFGS
that hit ``train.max_iter`` before converging.

Read from each finished job's ``result.json`` ``stopping`` record (``stopped_by``,
``epoch_limit``, ``dev_loss_improving``; see ``emoplug.train.loop.FitResult``). Jobs written
before the record existed are left out.
"""

from __future__ import annotations

from emoplug.report.collect import CellRecord, JobRecord, RunData
from emoplug.report.select import jobs_cell
from emoplug.report.tables import Section, Table

FLAG = "stopped by the epoch or iteration limit before converging"


def cut_short(job: JobRecord) -> bool | None:
    """The job ended at the epoch limit with its dev loss still improving, or its L-BFGS
    fit at the iteration limit before converging; None when its result has no stopping
    record."""
    stopping = (job.result or {}).get("stopping")
    if not isinstance(stopping, dict):
        return None
    if stopping.get("stopped_by") == "iteration_limit":
        return True
    return stopping.get("stopped_by") == "epoch_limit" and bool(
        stopping.get("dev_loss_improving"))


def fold_counts(cell: CellRecord) -> tuple[int, int]:
    """(folds cut short, folds with a stopping record); a fold is cut short when at least
    half of its seeds' jobs are."""
    by_fold: dict[str, list[bool]] = {}
    for job in cell.done:
        short = cut_short(job)
        if short is not None:
            by_fold.setdefault(job.fold, []).append(short)
    short_folds = sum(2 * sum(flags) >= len(flags) for flags in by_fold.values())
    return short_folds, len(by_fold)


def undertrained(cell: CellRecord) -> bool:
    """Training ended at the epoch limit with dev loss still improving in at least half of
    the cell's folds."""
    short, recorded = fold_counts(cell)
    return recorded > 0 and 2 * short >= recorded


def undertrained_cells(run: RunData) -> list[CellRecord]:
    return [cell for cell in run.cells if undertrained(cell)]


def stopping_section(run: RunData) -> Section:
    section = Section("stopping", "How training ended",
                      "Per cell, the folds whose training ended at the epoch limit while the "
                      "dev loss was still improving (a new best in the last tenth of the "
                      "epochs, at least in the last one), "
                      "rather than by early stopping, and the folds whose L-BFGS fit "
                      "(train.optimizer: lbfgs) reached train.max_iter before converging. A "
                      "cell where that happened in at least half of its folds is flagged "
                      f"\"{FLAG}\": it is under-trained; raise train.epochs or "
                      "train.max_iter.")
    rows = []
    for cell in run.cells:
        short, recorded = fold_counts(cell)
        if not recorded:
            continue
        limits = sorted({(j.result.get("stopping") or {}).get("epoch_limit")
                         for j in cell.done if cut_short(j) is not None} - {None})
        epochs = [j.result.get("epochs_run") for j in cell.done if cut_short(j) is not None]
        rows.append([cell.label, jobs_cell(cell), ", ".join(map(str, limits)),
                     f"{min(epochs)}–{max(epochs)}", f"{short}/{recorded}",
                     FLAG if undertrained(cell) else "ok"])
    if rows:
        section.tables.append(Table(["Cell", "Jobs", "Epoch limit", "Epochs run",
                                     "Folds cut short", "Verdict"], rows))
    else:
        section.empty = "No finished job recorded how its training ended."
    return section
