"""Statistics of the report, computed at the independent unit: the fold.

Under cross-validation the seeds of a fold share one test set, so their results are not
independent observations. Every statistic here first averages a cell's seeds within each
fold, then works over the folds (n = folds):

- a cell's value is the mean of its fold means ± their sample standard deviation (``ddof=1``);
- its seed spread is the within-fold standard deviation over seeds, pooled over the folds
  (the square root of the mean within-fold variance), shown on its own;
- a paired comparison matches two cells on the folds both finished (within a fold, on the
  seeds both finished) and tests the per-fold differences with the Nadeau–Bengio corrected
  resampled t-test (``CORRECTED``, the default): the variance of the mean difference is
  ``sd² · (1/n + n_test/n_train)`` instead of ``sd² / n``, because cross-validation training
  sets overlap and the fold differences are positively correlated (Nadeau & Bengio 2003;
  Bouckaert & Frank 2004). Its 95% confidence interval uses the same variance and the
  t-distribution with n − 1 degrees of freedom. ``PLAIN`` is the uncorrected paired t-test
  (``scipy.stats.ttest_rel``), shown only when asked. The Wilcoxon signed-rank test is given
  only when there are at least ``MIN_WILCOXON`` folds;
- the comparisons of one section on one metric form a family whose t-test p-values are
  Holm-corrected (``holm``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

#: fewest folds for which the Wilcoxon signed-rank test is reported (with 5 its smallest
#: two-sided p is 0.0625: it can never reject at 0.05)
MIN_WILCOXON = 6
CONFIDENCE = 0.95
#: the paired t-tests: Nadeau–Bengio's corrected resampled t-test, or the plain one
CORRECTED, PLAIN = "corrected", "plain"
STATS = (CORRECTED, PLAIN)
#: values keyed by (fold, seed)
FoldSeedValues = Mapping[tuple[str, int], float | None]


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of ``n`` finite values."""

    mean: float
    std: float
    n: int


def summarize(values: Sequence[float | None]) -> Summary:
    """Mean ± sample std (ddof=1) of the finite values; non-finite values are left out."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
    return Summary(float(np.mean(arr)), std, int(arr.size))


def fold_means(values: FoldSeedValues) -> dict[str, float]:
    """The mean over seeds of each fold's finite values (folds without one are left out)."""
    by_fold: dict[str, list[float]] = {}
    for (fold, _seed), value in values.items():
        if value is not None and math.isfinite(value):
            by_fold.setdefault(fold, []).append(float(value))
    return {fold: float(np.mean(v)) for fold, v in sorted(by_fold.items())}


def fold_summary(values: FoldSeedValues) -> Summary:
    """Mean ± sample std over the fold means (n = folds)."""
    return summarize(list(fold_means(values).values()))


def seed_spread(values: FoldSeedValues) -> float:
    """The within-fold standard deviation over seeds, pooled over the folds with at least two
    seeds: ``sqrt(mean_f var_f)`` with each ``var_f`` the sample variance (``ddof=1``);
    ``nan`` when no fold has two seeds."""
    by_fold: dict[str, list[float]] = {}
    for (fold, _seed), value in values.items():
        if value is not None and math.isfinite(value):
            by_fold.setdefault(fold, []).append(float(value))
    variances = [float(np.var(v, ddof=1)) for v in by_fold.values() if len(v) > 1]
    return math.sqrt(float(np.mean(variances))) if variances else math.nan


@dataclass(frozen=True)
class PairedTest:
    """Differences ``a - b`` over ``n`` matched folds and their tests (``nan`` when undefined).
    ``holm_p`` is the t-test p-value after Holm's correction within its family;
    ``test_train`` the ratio n_test/n_train of the Nadeau–Bengio correction (``nan``: the
    plain t-test)."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    t_p: float
    wilcoxon_p: float
    holm_p: float = math.nan
    test_train: float = math.nan

    @property
    def corrected(self) -> bool:
        return not math.isnan(self.test_train)


def matched_fold_means(a: FoldSeedValues, b: FoldSeedValues
                       ) -> tuple[list[str], list[float], list[float]]:
    """Folds both sides finished, and each side's mean over the seeds both finished there."""
    common = sorted(k for k in set(a) & set(b) if _finite(a[k]) and _finite(b[k]))
    folds = sorted({fold for fold, _ in common})
    mean_a = [float(np.mean([a[k] for k in common if k[0] == f])) for f in folds]
    mean_b = [float(np.mean([b[k] for k in common if k[0] == f])) for f in folds]
    return folds, mean_a, mean_b


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def paired_folds(a: FoldSeedValues, b: FoldSeedValues,
                 test_train: float | None = None) -> PairedTest:
    """``a - b`` at the fold level: seeds averaged within each fold, then ``paired_test``
    (corrected with ``test_train`` = n_test/n_train when given)."""
    _, mean_a, mean_b = matched_fold_means(a, b)
    return paired_test(mean_a, mean_b, test_train)


def paired_test(a: Sequence[float], b: Sequence[float],
                test_train: float | None = None) -> PairedTest:
    """Compare matched values ``a[i]`` and ``b[i]`` (pairs with a non-finite value are dropped).

    Without ``test_train``: the plain paired t-test, ``t = mean / (sd / √n)``. With it (the
    ratio n_test/n_train of the folds' split sizes): the Nadeau–Bengio corrected resampled
    t-test, ``t = mean / (sd · √(1/n + n_test/n_train))``; the confidence interval widens the
    same way. Both have n − 1 degrees of freedom. Differences that are all equal give p = 1
    when they are zero and p = 0 otherwise (the t statistic is infinite)."""
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
    ratio = nan if test_train is None else float(test_train)
    if n < 2:
        return PairedTest(n, float(a_arr.mean()), float(b_arr.mean()), mean, nan, nan, nan,
                          nan, nan, test_train=ratio)
    std = float(diff.std(ddof=1))
    se = std * math.sqrt(1 / n + (0.0 if math.isnan(ratio) else ratio))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    if std == 0:
        t_p = 1.0 if mean == 0 else 0.0
    else:
        t_p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    wilcoxon_p = nan
    if n >= MIN_WILCOXON:
        wilcoxon_p = 1.0 if not diff.any() else float(stats.wilcoxon(a_arr, b_arr).pvalue)
    return PairedTest(n, float(a_arr.mean()), float(b_arr.mean()), mean, std, mean - half,
                      mean + half, t_p, wilcoxon_p, test_train=ratio)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (Holm 1979); ``nan`` entries are
    not part of the family and stay ``nan``.

    With the m finite p-values sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))`` (1-based)."""
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    m = len(finite)
    for rank, (p, index) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def with_holm(tests: Sequence[PairedTest]) -> list[PairedTest]:
    """The tests of one family with ``holm_p`` filled in from their t-test p-values."""
    return [replace(t, holm_p=p) for t, p in zip(tests, holm([t.t_p for t in tests]),
                                                   strict=True)]


def majority_floor(train_counts: Sequence[int], test_counts: Sequence[int]
                   ) -> tuple[int, dict[str, float]] | None:
    """The majority-class baseline of one fold: always predict the training set's most
    frequent class (the first of equals). Returns its index and its ``wa``, ``ua`` and
    ``macro_f1`` on the test counts, averaged over classes as the metrics average them (UA
    over the classes in the test set; macro-F1 over those and the predicted class)."""
    train, test = np.asarray(train_counts, dtype=float), np.asarray(test_counts, dtype=float)
    if train.sum() <= 0 or test.sum() <= 0 or train.shape != test.shape:
        return None
    majority = int(np.argmax(train))
    share = float(test[majority] / test.sum())
    present = int((test > 0).sum())
    if test[majority] > 0:
        scores = {"wa": share, "ua": 1.0 / present, "macro_f1": 2 * share / (1 + share) / present}
    else:
        scores = {"wa": 0.0, "ua": 0.0, "macro_f1": 0.0}
    return majority, scores
