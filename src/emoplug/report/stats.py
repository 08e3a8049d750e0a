"""Statistics of the report: mean ± sample std, and paired comparisons of two cells.

Means and standard deviations run over a cell's finished jobs (folds × seeds); the standard
deviation is the sample one (``ddof=1``), ``nan`` for a single job. A paired comparison
matches two cells' jobs on (fold, seed) and tests the per-pair differences: a 95% confidence
interval from the t-distribution, scipy's paired t-test, and the Wilcoxon signed-rank test
when there are at least ``MIN_WILCOXON`` pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: fewest pairs for which the Wilcoxon signed-rank test is reported
MIN_WILCOXON = 6
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of ``n`` finite values."""

    mean: float
    std: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± sample std (ddof=1) of the finite values; non-finite values are left out."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
    return Summary(float(np.mean(arr)), std, int(arr.size))


@dataclass(frozen=True)
class PairedTest:
    """Differences ``a - b`` over ``n`` matched pairs and their tests (``nan`` when undefined)."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    t_p: float
    wilcoxon_p: float


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Compare matched values ``a[i]`` and ``b[i]`` (pairs with a non-finite value are dropped).

    Differences that are all equal give p = 1 when they are zero and p = 0 otherwise (the
    t statistic is infinite), where scipy would return ``nan`` for the first."""
    from scipy import stats

    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired_test: {a_arr.size} values against {b_arr.size}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    a_arr, b_arr = a_arr[keep], b_arr[keep]
    diff = a_arr - b_arr
    n = int(diff.size)
    nan = math.nan
    if n == 0:
        return PairedTest(0, nan, nan, nan, nan, nan, nan, nan, nan)
    mean = float(diff.mean())
    if n < 2:
        return PairedTest(n, float(a_arr.mean()), float(b_arr.mean()), mean, nan, nan, nan,
                          nan, nan)
    std = float(diff.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    if std == 0:
        t_p = 1.0 if mean == 0 else 0.0
    else:
        t_p = float(stats.ttest_rel(a_arr, b_arr).pvalue)
    wilcoxon_p = nan
    if n >= MIN_WILCOXON:
        wilcoxon_p = 1.0 if not diff.any() else float(stats.wilcoxon(a_arr, b_arr).pvalue)
    return PairedTest(n, float(a_arr.mean()), float(b_arr.mean()), mean, std, mean - half,
                      mean + half, t_p, wilcoxon_p)
