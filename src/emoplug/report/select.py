"""Which cells the report compares, how it picks a best one, and the chance floors.

Every "best" is chosen on the **dev** split and reported on test: a cell's rank is its mean
dev UA over the folds **every candidate finished** (seeds averaged within each fold first), ties
broken by label, then id. Averaging each cell over whatever folds it finished would let an
incomplete cell that misses its hardest fold win; a candidate that shares no fold with the
others is left out of the ranking, and the ranking says so (``Ranking.note``).
Ablation cells (an ablation switch set, see ``CellRecord.ablations``) and learning controls
(``control: permuted_labels``) are left out of every comparison except their own sections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from emoplug.report.collect import CellRecord, RunData
from emoplug.report.stats import Summary, fold_means, fold_summary, majority_floor, summarize
from emoplug.report.tables import fmt_summary
from emoplug.types import AVD_NAMES

#: the metric, and the split, every "best" is chosen by
RANK_METRIC, SELECTION_SPLIT = "ua", "dev"
CHOSEN = "chosen on dev UA"
def cell_summary(cell: CellRecord, metric: str, split: str = "test") -> Summary:
    """Mean ± std over the cell's fold means of ``metric`` (n = folds)."""
    return fold_summary(cell.values(metric, split))


def has_metric(cell: CellRecord, metric: str) -> bool:
    return any(j.metric(metric) is not None for j in cell.done)


def dims_present(cells: Iterable[CellRecord]) -> list[str]:
    """The AVD dimensions some of ``cells`` have a test RMSE of."""
    cells = list(cells)
    return [d for d in AVD_NAMES if any(has_metric(c, f"{d}_rmse") for c in cells)]


INCOMPLETE_MARK = "†"


def jobs_cell(cell: CellRecord) -> str:
    """``done/planned``, marked when fewer jobs finished than were planned."""
    text = f"{len(cell.done)}/{cell.planned}" if cell.planned else str(len(cell.done))
    return f"{text} {INCOMPLETE_MARK}" if cell.incomplete else text


def is_ablation(cell: CellRecord) -> bool:
    """The cell sets an ablation switch (a setting its component declares as one, such as
    the bundled fusions' ``attention: false``; recorded in the job's ``config.json``)."""
    return bool(cell.ablations)


def reference_protocol(run: RunData) -> str | None:
    """The protocol every comparison uses when a run has several (``protocols:`` in the
    recipe): the recipe's default ``protocol`` when some cell uses it (None), else the first
    protocol the plan lists."""
    names = [c.protocol_name for c in run.cells if c.names is not None]
    if not names or None in names:
        return None
    listed = [p for p in ((run.plan or {}).get("protocols") or []) if p in names]
    return listed[0] if listed else sorted(names)[0]


def comparable(run: RunData) -> list[CellRecord]:
    """Cells with finished jobs and known components under the reference protocol,
    ablations and controls left out."""
    reference = reference_protocol(run)
    return [c for c in run.cells if c.done and c.names is not None and not is_ablation(c)
            and c.control is None and c.protocol_name == reference]


@dataclass(frozen=True)
class Ranking:
    """Candidates ranked by mean dev UA over ``folds``, the folds every ranked cell finished.

    ``finished``: the folds some candidate finished; ``left_out``: candidates with dev
    scores that share no fold with the others (the fewest-fold candidates are dropped until
    the rest share one)."""

    cells: list[CellRecord]
    folds: list[str]
    finished: list[str]
    left_out: list[CellRecord]
    measure: str = "dev UA"

    def note(self, what: str) -> str | None:
        """One line when the ranking of ``what`` did not use every finished fold or left a
        cell out; None when it ranked every candidate on every fold."""
        if not self.cells or (self.folds == self.finished and not self.left_out):
            return None
        text = (f"{what}: ranked on {self.measure} over the {len(self.folds)} of "
                f"{len(self.finished)} "
                f"folds every candidate finished ({', '.join(self.folds)}), not over whatever "
                "folds each finished")
        if self.left_out:
            text += (f"; left out of the ranking (no fold in common with the others): "
                     f"{', '.join(c.label for c in self.left_out)}")
        return text + "."


def dev_ua_by_fold(cell: CellRecord) -> dict[str, float]:
    """A cell's dev UA per fold (seeds averaged within each fold)."""
    return fold_means(cell.values(RANK_METRIC, SELECTION_SPLIT))


def rank(cells: Iterable[CellRecord],
         fold_scores: Callable[[CellRecord], dict[str, float]] = dev_ua_by_fold,
         lower_is_better: bool = False, measure: str = "dev UA") -> Ranking:
    """Rank ``cells`` by the mean of ``fold_scores`` (default: dev UA) over the folds all of
    them finished (best first; ties: label, then id). Cells without a score are not
    candidates."""
    cells = list(cells)
    scores = {c.id: fold_scores(c) for c in cells}
    candidates = [c for c in cells if scores[c.id]]
    finished = sorted({f for c in candidates for f in scores[c.id]})
    kept = sorted(candidates, key=lambda c: (-len(scores[c.id]), c.label, c.id))
    left_out: list[CellRecord] = []
    while kept and not set.intersection(*(set(scores[c.id]) for c in kept)):
        left_out.insert(0, kept.pop())
    folds = sorted(set.intersection(*(set(scores[c.id]) for c in kept))) if kept else []
    mean = {c.id: sum(scores[c.id][f] for f in folds) / len(folds) for c in kept}
    sign = 1 if lower_is_better else -1
    order = sorted(kept, key=lambda c: (sign * mean[c.id], c.label, c.id))
    return Ranking(order, folds, finished, left_out, measure)


def best(cells: Iterable[CellRecord]) -> CellRecord | None:
    """The cell with the highest mean dev UA on the folds every candidate finished, or None
    when no cell has dev metrics."""
    order = rank(cells).cells
    return order[0] if order else None


def twin_of(control: CellRecord, cells: Iterable[CellRecord]) -> CellRecord | None:
    """The cell that trains like ``control`` on true labels (same components, no control)."""
    for cell in cells:
        if cell.control is None and cell.configs == control.configs and cell.done:
            return cell
    return None


@dataclass(frozen=True)
class FoldFloor:
    """The majority-class baseline of one fold: always predict the training majority."""

    fold: str
    majority: str
    test_size: int
    scores: dict[str, float]  # wa, ua, macro_f1
    test_sets: int  # distinct test label counts among the fold's jobs (1 when cells agree)


def protocol_names(run: RunData) -> list[str | None]:
    """The protocols the run's cells use: the reference first, then the others in the
    plan's order (None = the recipe's own protocol)."""
    used = {c.protocol_name for c in run.cells if c.names is not None}
    listed = [p for p in ((run.plan or {}).get("protocols") or []) if p in used]
    order = [reference_protocol(run), *listed, *sorted(p for p in used if p is not None)]
    return [p for p in dict.fromkeys(order) if p in used or p == order[0]]


def fold_floors(run: RunData, protocol: str | None = None) -> list[FoldFloor]:
    """Each fold's majority-class WA and UA, under ``protocol`` (a name of the recipe's
    ``protocols``; None = its own ``protocol``), from its jobs' recorded label counts; when
    cells of a fold have different test sets (utterances lacking a modality dropped), the
    most common one is used and ``test_sets`` counts them."""
    seen: dict[str, Counter] = {}
    under = {c.id for c in run.cells if c.protocol_name == protocol}
    for job in sorted((j for j in run.jobs if j.cell in under), key=lambda j: j.id):
        result = job.result or {}
        counts, labels = result.get("label_counts"), result.get("labels")
        if job.status != "done" or not isinstance(counts, dict) or not labels:
            continue
        key = (tuple(labels), tuple(counts.get("train") or ()), tuple(counts.get("test") or ()))
        seen.setdefault(job.fold, Counter())[key] += 1
    floors = []
    for fold in sorted(seen):
        (labels, train, test), _ = seen[fold].most_common(1)[0]
        floor = majority_floor(train, test)
        if floor is not None:
            majority, scores = floor
            floors.append(FoldFloor(fold, labels[majority], int(sum(test)), scores,
                                    len(seen[fold])))
    return floors


def floor_summary(floors: list[FoldFloor], metric: str) -> Summary:
    """Mean ± std over folds of the floor's ``metric`` (none for metrics it has no value of)."""
    return summarize([f.scores.get(metric) for f in floors])



def floor_cells(floors: list[FoldFloor], metrics: Iterable[str]) -> list[str]:
    """Table cells of the majority-class floor of each metric (mean ± std over folds)."""
    return [fmt_summary(floor_summary(floors, m), m) for m in metrics]
