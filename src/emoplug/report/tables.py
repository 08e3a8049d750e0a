"""The report's structure (tables, sections) and how numbers are written in it.

Classification metrics (WA, UA, F1) and word error rates are shown in %, their differences in
percentage points; dimensional metrics (RMSE, MAE, CCC) on the corpus scale with three
decimals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from emoplug.report.figures import Chart
from emoplug.report.stats import PairedTest, Summary

#: (result key, column title) of the classification metrics, shown in %. Micro-F1 is left out
#: of the tables: for single-label classification it equals accuracy (WA) by definition.
CLASS_METRICS = (("wa", "WA"), ("ua", "UA"), ("macro_f1", "Macro-F1"))
#: per-dimension metric suffixes and titles (``valence_rmse`` ...)
DIM_METRICS = (("rmse", "RMSE"), ("mae", "MAE"), ("ccc", "CCC"))
PERCENT = frozenset({*(key for key, _ in CLASS_METRICS), "micro_f1", "wer"})
DASH = "—"


@dataclass
class Table:
    """A table of text cells. ``note`` is its footnote in the LaTeX tables (what n counts,
    which test); ``best`` maps a column title to ``max`` or ``min``: the LaTeX tables set that
    column's best value in bold, among the rows before the last ``summary_rows`` (reference
    rows such as a chance floor or a mean, never "best")."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    note: str = ""
    best: dict[str, str] = field(default_factory=dict)
    summary_rows: int = 0


@dataclass
class Section:
    """One part of the report: what it shows, its tables and charts, or why it is empty
    (``empty``: one line shown instead of tables and charts)."""

    key: str
    title: str
    text: str
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    empty: str | None = None


    def figure_stems(self) -> list[str]:
        """File stems of the section's figures: ``<key>``, or ``<key>_1``, ``<key>_2``..."""
        if len(self.charts) == 1:
            return [self.key]
        return [f"{self.key}_{i}" for i in range(1, len(self.charts) + 1)]


@dataclass
class Report:
    title: str
    summary: list[str]
    sections: list[Section]


def _scale(metric: str) -> tuple[float, int]:
    """Percent metrics print as ``71.2``, the others as ``0.631``."""
    return (100.0, 1) if metric in PERCENT else (1.0, 3)


def fmt_number(value: float, digits: int, sign: bool = False) -> str:
    """``value`` with ``digits`` decimals, signed with ``sign``; a value that rounds to zero
    prints without a sign (``0.0``, not ``-0.0`` or ``+0.0``)."""
    rounded = round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{rounded:+.{digits}f}" if sign and rounded else f"{rounded:.{digits}f}"


def fmt_value(value: float, metric: str) -> str:
    """One value of ``metric``: ``71.2`` (% metrics) or ``0.631``; a dash for ``nan``."""
    if math.isnan(value):
        return DASH
    scale, digits = _scale(metric)
    return fmt_number(scale * value, digits)


def fmt_summary(summary: Summary, metric: str) -> str:
    """``71.2 ± 1.5`` (% metrics) or ``0.631 ± 0.012``; the mean alone for a single value."""
    if summary.n == 0:
        return DASH
    text = fmt_value(summary.mean, metric)
    if not math.isnan(summary.std):
        text += f" ± {fmt_value(summary.std, metric)}"
    return text


def fmt_diff(test: PairedTest, metric: str) -> str:
    """The mean paired difference (signed) and its 95% CI: ``+2.3 [0.4, 4.2]``."""
    if test.n == 0:
        return DASH
    scale, digits = _scale(metric)
    text = fmt_number(scale * test.mean_diff, digits, sign=True)
    if not math.isnan(test.ci_low):
        text += (f" [{fmt_number(scale * test.ci_low, digits)}, "
                 f"{fmt_number(scale * test.ci_high, digits)}]")
    return text


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_seconds(seconds: float) -> str:
    """``35 ms``, ``12.3 s``, ``4.5 min`` or ``1.25 h``."""
    if math.isnan(seconds):
        return DASH
    if seconds < 1:
        return f"{1000 * seconds:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def metric_title(metric: str) -> str:
    """``ua`` -> ``UA``, ``valence_rmse`` -> ``valence RMSE``."""
    titles = {**dict(CLASS_METRICS), "micro_f1": "Micro-F1"}
    if metric in titles:
        return titles[metric]
    dim, _, kind = metric.rpartition("_")
    return f"{dim} {dict(DIM_METRICS).get(kind, kind)}"
