"""The report's statistics on values worked out by hand: fold means, the seed spread, paired
tests at the fold level, Holm's correction, majority-class floors, and number formatting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from emoplug.metrics import classification_metrics
from emoplug.report.stats import (
    fold_means,
    fold_summary,
    holm,
    majority_floor,
    paired_folds,
    seed_spread,
)
from emoplug.report.tables import fmt_diff, fmt_seconds, fmt_summary

#: (fold, seed) -> UA of two cells; B lacks seed 1 of fold f2
A = {("f1", 0): 0.6, ("f1", 1): 0.8, ("f2", 0): 0.5, ("f2", 1): 0.7, ("f3", 0): 0.9}
B = {("f1", 0): 0.5, ("f1", 1): 0.7, ("f2", 0): 0.5, ("f3", 0): 0.7, ("f3", 1): 0.6}


def test_fold_means_average_seeds_first():
    assert fold_means(A) == pytest.approx({"f1": 0.7, "f2": 0.6, "f3": 0.9})
    summary = fold_summary(A)
    assert summary.n == 3  # folds, not the five jobs
    assert summary.mean == pytest.approx(np.mean([0.7, 0.6, 0.9]))
    assert summary.std == pytest.approx(np.std([0.7, 0.6, 0.9], ddof=1))
    assert fold_means({("f1", 0): None, ("f1", 1): math.nan, ("f2", 0): 0.4}) == {"f2": 0.4}


def test_seed_spread_pools_within_fold_variances():
    # f1: var(0.6, 0.8) = 0.02; f2: var(0.5, 0.7) = 0.02; f3 has one seed and is left out
    assert seed_spread(A) == pytest.approx(math.sqrt(0.02))
    assert math.isnan(seed_spread({("f1", 0): 0.5, ("f2", 0): 0.6}))


def test_paired_folds_by_hand():
    # seeds both finished, averaged per fold: f1 0.7 vs 0.6, f2 (seed 0) 0.5 vs 0.5,
    # f3 (seed 0) 0.9 vs 0.7 -> differences 0.1, 0.0, 0.2: mean 0.1, sd 0.1, n 3
    test = paired_folds(A, B)
    assert test.n == 3
    assert (test.mean_a, test.mean_b) == pytest.approx((0.7, 0.6))
    assert test.mean_diff == pytest.approx(0.1) and test.std_diff == pytest.approx(0.1)
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, 2 df) = 4.302653
    assert (test.ci_low, test.ci_high) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-6)
    # t = 0.1 / (0.1 / sqrt 3) = sqrt 3, two-sided with 2 df: p = 0.2254
    assert test.t_p == pytest.approx(0.2254, abs=1e-4)
    assert test.t_p == pytest.approx(2 * stats.t.sf(math.sqrt(3), 2))
    assert math.isnan(test.wilcoxon_p)  # fewer than 6 folds


def test_corrected_resampled_t_test_by_hand():
    """Nadeau & Bengio (2003): the same differences 0.1, 0.0, 0.2 (mean 0.1, sd 0.1, n 3)
    with n_test/n_train = 0.5 (3-fold CV: a third tested, two thirds trained on). The
    variance of the mean becomes sd² (1/3 + 1/2) = 0.01 · 5/6 instead of sd²/3."""
    test = paired_folds(A, B, test_train=0.5)
    se = 0.1 * math.sqrt(5 / 6)  # 0.0912871
    assert test.corrected and test.test_train == 0.5
    assert test.mean_diff == pytest.approx(0.1) and test.std_diff == pytest.approx(0.1)
    # t = 0.1 / 0.0912871 = 1.095445 = sqrt(1.2); with 2 df the two-sided p has the closed
    # form 1 - t / sqrt(t² + 2) = 1 - sqrt(1.2 / 3.2) = 0.387628
    assert test.t_p == pytest.approx(1 - math.sqrt(1.2 / 3.2), abs=1e-9)
    assert test.t_p == pytest.approx(0.387628, abs=1e-6)
    half = 4.302653 * se  # t(0.975, 2 df) · corrected standard error = 0.392775
    assert (test.ci_low, test.ci_high) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-6)
    plain = paired_folds(A, B)  # the same closed form gives the plain p: 1 - sqrt(3 / 5)
    assert not plain.corrected and plain.t_p == pytest.approx(1 - math.sqrt(3 / 5))
    assert test.t_p > plain.t_p and test.ci_high - test.ci_low > plain.ci_high - plain.ci_low


def test_wilcoxon_only_from_six_folds():
    a = {(f"f{i}", 0): 0.7 + 0.01 * i for i in range(6)}
    b = {(f"f{i}", 0): 0.65 + 0.013 * i for i in range(6)}
    assert not math.isnan(paired_folds(a, b).wilcoxon_p)
    five = {k: v for k, v in a.items() if k[0] != "f5"}
    assert math.isnan(paired_folds(five, b).wilcoxon_p)


def test_holm_by_hand():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, 0.04, 0.03, math.nan])[3])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_majority_floor_matches_the_metrics_of_always_predicting_it():
    train, test = [5, 9, 9, 2], [4, 2, 0, 4]
    majority, scores = majority_floor(train, test)
    assert majority == 1  # happy and angry tie at 9: the first wins
    gold = np.repeat(np.arange(4), test)
    metrics = classification_metrics(gold, np.full(len(gold), majority), ["n", "h", "a", "s"])
    assert scores["wa"] == pytest.approx(metrics["wa"]) == pytest.approx(0.2)
    assert scores["ua"] == pytest.approx(metrics["ua"]) == pytest.approx(1 / 3)
    assert scores["macro_f1"] == pytest.approx(metrics["macro_f1"])
    _, absent = majority_floor([0, 0, 5, 1], [3, 3, 0, 4])  # the majority is not in test
    assert absent == {"wa": 0.0, "ua": 0.0, "macro_f1": 0.0}
    assert majority_floor([0, 0], [1, 1]) is None


def test_numbers_never_print_minus_zero():
    from emoplug.report.stats import PairedTest, Summary

    tiny = PairedTest(5, 0.5, 0.5, -0.00004, 0.001, -0.0004, 0.0003, 0.9, math.nan)
    assert fmt_diff(tiny, "ua") == "0.0 [0.0, 0.0]"
    assert fmt_diff(tiny, "rmse") == "0.000 [0.000, 0.000]"
    assert fmt_summary(Summary(-0.00001, 0.00001, 2), "ua") == "0.0 ± 0.0"


def test_seconds_under_one_print_in_milliseconds():
    assert fmt_seconds(0.0123) == "12 ms"
    assert fmt_seconds(0.0) == "0 ms"
    assert fmt_seconds(12.34) == "12.3 s"
    assert fmt_seconds(300) == "5.0 min"
