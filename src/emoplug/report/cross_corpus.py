"""The report's cross-corpus section: a train × test matrix per cell, with in-corpus scores.

A job run under a cross-corpus protocol (``cross_corpus``, ``leave_one_corpus_out``) records
the corpora its fold trained on and the corpus it tested on (``train_corpora``,
``test_corpus`` in ``result.json``'s ``protocol``). Each matrix entry is one fold: a training
set of corpora (row) tested on one corpus (column), its seeds averaged (± their SD). The
in-corpus row beside it holds, for each test corpus, the same components' score under a
within-corpus protocol over that corpus alone (a protocol with ``within: <name>`` in the
recipe), mean ± std over its folds; a dash when the recipe has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from emoplug.report.collect import CellRecord, RunData
from emoplug.report.figures import ScoreMatrix
from emoplug.report.select import cell_summary, jobs_cell
from emoplug.report.stats import Summary, summarize
from emoplug.report.tables import CLASS_METRICS, DASH, Section, Table, fmt_summary, metric_title

#: the metric of the matrices and the heatmap
MATRIX_METRIC = "ua"
IN_CORPUS = "in-corpus"


@dataclass
class CorpusMatrix:
    """The cross-corpus scores of one set of components (a cell label without its
    protocol): per (training corpora, test corpus), each metric's values over seeds."""

    label: str
    cells: list[CellRecord] = field(default_factory=list)
    scores: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)
    protocols: dict[tuple[str, str], str] = field(default_factory=dict)
    #: per test corpus: the in-corpus cell and the name of its protocol
    in_corpus: dict[str, tuple[CellRecord, str]] = field(default_factory=dict)

    @property
    def trains(self) -> list[str]:
        return sorted({train for train, _ in self.scores})

    @property
    def tests(self) -> list[str]:
        return sorted({test for _, test in self.scores})

    def summary(self, train: str, test: str, metric: str) -> Summary:
        return summarize((self.scores.get((train, test)) or {}).get(metric, []))

    def in_corpus_summary(self, test: str, metric: str) -> Summary:
        entry = self.in_corpus.get(test)
        return cell_summary(entry[0], metric) if entry else Summary(math.nan, math.nan, 0)


def components_label(cell: CellRecord) -> str:
    """The cell's label without the ``@protocol`` suffix: what it is, under any protocol."""
    name = cell.protocol_name
    return cell.label.removesuffix(f"@{name}") if name else cell.label


def corpus_matrices(run: RunData) -> tuple[list[CorpusMatrix], list[str]]:
    """One matrix per set of components that ran under a cross-corpus protocol, and notes
    (a train → test pair two protocols ran: the first protocol by name is shown)."""
    matrices: dict[str, CorpusMatrix] = {}
    notes: list[str] = []
    for cell in sorted(run.cells, key=lambda c: (c.protocol_name or "", c.id)):
        for job in cell.done:
            protocol = job.result.get("protocol") or {}
            train, test = protocol.get("train_corpora"), protocol.get("test_corpus")
            if not isinstance(train, str) or not isinstance(test, str):
                continue
            matrix = matrices.setdefault(components_label(cell), CorpusMatrix(
                components_label(cell)))
            if cell not in matrix.cells:
                matrix.cells.append(cell)
            under = cell.protocol_name or "(recipe protocol)"
            if matrix.protocols.setdefault((train, test), under) != under:
                notes.append(f"{matrix.label}: {train} → {test} ran under "
                             f"{matrix.protocols[(train, test)]} and {under}; the matrix "
                             f"shows {matrix.protocols[(train, test)]}")
                continue
            values = matrix.scores.setdefault((train, test), {})
            for metric, _ in CLASS_METRICS:
                value = job.metric(metric)
                if value is not None:
                    values.setdefault(metric, []).append(value)
    for matrix in matrices.values():
        for cell in run.cells:
            corpus = cell.protocol.get("within")
            if (cell.done and isinstance(corpus, str) and corpus in matrix.tests
                    and components_label(cell) == matrix.label):
                matrix.in_corpus.setdefault(corpus, (cell, cell.protocol_name or
                                                     "(recipe protocol)"))
    return list(matrices.values()), list(dict.fromkeys(notes))


def cross_corpus_section(run: RunData) -> Section:
    section = Section(
        "cross_corpus", "Cross-corpus matrix",
        "Each cell trained on some corpora (rows) and tested on another (columns): test "
        f"{metric_title(MATRIX_METRIC)} in %, one fold per entry, mean ± SD over seeds (n = "
        "seeds). The in-corpus row holds the same components under a within-corpus protocol "
        "over the test corpus alone (mean ± std over its folds), when the recipe has one; the "
        "gap between the two is what the change of corpus costs. Labels are the recipe's "
        "shared label set (label_map); a constant prediction scores UA = 100 / classes.")
    matrices, notes = corpus_matrices(run)
    if not matrices:
        section.empty = ("No cell ran under a cross-corpus protocol (cross_corpus or "
                         "leave_one_corpus_out over a recipe's `datasets`).")
        return section
    panels = []
    for matrix in matrices:
        trains, tests = matrix.trains, matrix.tests
        rows = [[train, *[fmt_summary(matrix.summary(train, test, MATRIX_METRIC),
                                      MATRIX_METRIC) for test in tests]] for train in trains]
        rows.append([IN_CORPUS, *[fmt_summary(matrix.in_corpus_summary(test, MATRIX_METRIC),
                                              MATRIX_METRIC) for test in tests]])
        section.tables.append(Table(
            ["Trained on \\ tested on", *tests], rows,
            f"{matrix.label}: test {metric_title(MATRIX_METRIC)} (%), train × test",
            note="one fold per entry, mean ± SD over seeds; in-corpus: mean ± std over the "
                 "folds of a within-corpus protocol", summary_rows=1))
        values = np.array([[matrix.summary(t, s, MATRIX_METRIC).mean for s in tests]
                           for t in trains] +
                          [[matrix.in_corpus_summary(s, MATRIX_METRIC).mean for s in tests]])
        panels.append((matrix.label, [*trains, IN_CORPUS], tests, values))
    section.tables.append(_pairs_table(matrices))
    section.charts.append(ScoreMatrix(
        f"Cross-corpus test {metric_title(MATRIX_METRIC)}", panels,
        f"test {metric_title(MATRIX_METRIC)} (%)", reference_rows=1))
    section.notes += [*notes, _speaker_note(matrices)]
    if ((run.plan or {}).get("data") or {}).get("synthetic"):
        section.notes.append("The corpora are synthetic (generated demo data): these numbers "
                             "show that the machinery works, not how a model transfers "
                             "between real corpora.")
    missing = sorted({t for m in matrices for t in m.tests if t not in m.in_corpus})
    if missing:
        section.notes.append(f"No in-corpus score for {', '.join(missing)}: add a protocol "
                             "with `within: <name>` (e.g. {type: loso, within: "
                             f"{missing[0]}}}) to the recipe's `protocols` and its grid.")
    return section


def _pairs_table(matrices: list[CorpusMatrix]) -> Table:
    """Every train → test pair with all metrics, and the in-corpus UA of its test corpus."""
    metrics = [m for m, _ in CLASS_METRICS]
    rows = []
    for matrix in matrices:
        for train, test in matrix.scores:
            cross = matrix.summary(train, test, MATRIX_METRIC)
            within = matrix.in_corpus_summary(test, MATRIX_METRIC)
            gap = within.mean - cross.mean if cross.n and within.n else math.nan
            entry = matrix.in_corpus.get(test)
            rows.append([matrix.label, train, test, matrix.protocols[(train, test)],
                         str(cross.n),
                         *[fmt_summary(matrix.summary(train, test, m), m) for m in metrics],
                         fmt_summary(within, MATRIX_METRIC)
                         + (f" ({entry[1]}, {jobs_cell(entry[0])} jobs)" if entry else ""),
                         DASH if math.isnan(gap) else f"{100 * gap:+.1f}"])
    return Table(["Cell", "Trained on", "Tested on", "Protocol", "n (seeds)",
                  *[metric_title(m) for m in metrics], f"In-corpus {metric_title('ua')}",
                  f"In-corpus − cross {metric_title('ua')} (pp)"], rows,
                 "Cross-corpus scores per train → test pair",
                 note="mean ± SD over seeds (one fold per pair); in-corpus: mean ± std over "
                      "the folds of the within-corpus protocol named beside it",
                 best={metric_title(m): "max" for m in metrics})


def _speaker_note(matrices: list[CorpusMatrix]) -> str:
    """What the leakage audit found across corpora (speakers are distinct by construction),
    counted once per fold."""
    audits: dict[tuple[str | None, str], dict] = {}
    for matrix in matrices:
        for cell in matrix.cells:
            for job in cell.done:
                audit = job.result.get("audit")
                if "test_corpus" in (job.result.get("protocol") or {}) and audit:
                    audits.setdefault((cell.protocol_name, job.fold), audit)
    shared = sum(max((a.get("train") or {}).get("speaker") or 0,
                     (a.get("dev") or {}).get("speaker") or 0) for a in audits.values())
    tested = sum(a.get("test") or 0 for a in audits.values())
    return (f"Leakage across corpora: ids, speakers and sessions are namespaced per corpus, "
            f"so no speaker is shared across corpora by construction; the leakage audit of "
            f"the {len(audits)} cross-corpus folds finds {shared} of their {tested} test "
            "utterances with a speaker in train or dev (see 'Protocol and leakage').")
