"""Metrics against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from emoplug.metrics import ccc, classification_metrics, dimensional_metrics

LABELS = ["neutral", "happy", "angry", "sad"]
# "sad" (3) never appears in gold; "angry" (2) is never predicted.
GOLD = [0, 0, 0, 1, 1, 2]
PRED = [0, 0, 1, 1, 3, 0]


def test_classification_metrics_by_hand():
    m = classification_metrics(GOLD, PRED, LABELS)
    assert m["wa"] == pytest.approx(3 / 6)
    assert m["ua"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # recall over gold classes
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0 + 0) / 4)
    assert m["micro_f1"] == pytest.approx(3 / 6)
    assert m["per_class"]["neutral"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["happy"] == pytest.approx(
        {"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert m["per_class"]["angry"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["sad"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion"] == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_class_absent_everywhere_and_unlabelled_rows():
    m = classification_metrics(GOLD + [-1], PRED + [2], LABELS + ["frustrated"])
    assert m["wa"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(7 / 24)  # a class seen nowhere is not averaged
    assert m["per_class"]["frustrated"]["support"] == 0
    assert len(m["confusion"]) == 5 and all(len(row) == 5 for row in m["confusion"])
    assert m["confusion"][2] == [1, 0, 0, 0, 0]  # the -1 row predicted 2 is not counted


def test_every_figure_equals_scikit_learns_own():
    """Confusion matrix, per-class figures and averages equal scikit-learn's, on random
    splits with classes missing from gold or predictions."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        recall_score,
    )

    rng = np.random.default_rng(0)
    for _ in range(200):
        n, k = int(rng.integers(1, 30)), int(rng.integers(2, 7))
        gold, pred = rng.integers(0, k, n), rng.integers(0, k, n)
        labels = [f"c{i}" for i in range(k + int(rng.integers(0, 2)))]
        unlabelled = rng.integers(0, 3)  # rows with gold -1, which every figure ignores
        m = classification_metrics(np.r_[gold, [-1] * unlabelled],
                                   np.r_[pred, rng.integers(0, k, unlabelled)], labels)
        occurring = sorted(set(gold) | set(pred))
        every = list(range(len(labels)))
        assert m["confusion"] == confusion_matrix(gold, pred, labels=every).tolist()
        figures = precision_recall_fscore_support(gold, pred, labels=every, zero_division=0)
        for name, expected in zip(("precision", "recall", "f1", "support"), figures,
                                  strict=True):
            assert [m["per_class"][c][name] for c in labels] == pytest.approx(
                expected.tolist(), abs=1e-12)
        assert m["wa"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
        assert m["ua"] == pytest.approx(recall_score(
            gold, pred, labels=np.unique(gold), average="macro", zero_division=0), abs=1e-12)
        assert m["macro_f1"] == pytest.approx(f1_score(
            gold, pred, labels=occurring, average="macro", zero_division=0), abs=1e-12)
        assert m["micro_f1"] == pytest.approx(f1_score(
            gold, pred, labels=list(range(len(labels))), average="micro", zero_division=0),
            abs=1e-12)  # scikit-learn < 1.4 computes it as 2pr/(p+r): a last-bit difference
        assert m["micro_f1"] == m["wa"]


def test_class_indices_outside_the_labels_are_an_error():
    with pytest.raises(ValueError, match="class indices must lie in 0..3"):
        classification_metrics([0, 1], [0, 4], LABELS)


def test_perfect_classification_and_json():
    m = classification_metrics(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), LABELS)
    assert m["wa"] == m["ua"] == m["macro_f1"] == m["micro_f1"] == 1.0
    json.dumps(m)
    assert all(type(v) is float for k, v in m.items() if k not in ("per_class", "confusion"))
    assert type(m["per_class"]["sad"]["support"]) is int


def test_ccc():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc([2.0, 2.0], [2.0, 2.0]) == 1.0
    # y = x + 1: var 2/3, cov 2/3, mean gap 1 -> (4/3) / (4/3 + 1)
    assert ccc([2, 3, 4], [3, 4, 5]) == pytest.approx(4 / 7)
    assert ccc([1, 2], [2, 1]) == pytest.approx(-1.0)
    assert type(ccc(x, x)) is float


def test_dimensional_metrics_by_hand():
    nan = float("nan")
    gold = [[1, 2, 3], [2, 3, 4], [3, 4, nan]]
    pred = [[1, 3, 4], [2, 4, 3], [3, 5, 100]]
    m = dimensional_metrics(gold, pred)
    assert set(m) == {f"{d}_{k}" for d in ("valence", "arousal", "dominance")
                      for k in ("rmse", "mae", "pearson", "ccc")}
    assert m["valence_rmse"] == 0.0 and m["valence_mae"] == 0.0
    assert m["valence_pearson"] == pytest.approx(1.0) and m["valence_ccc"] == pytest.approx(1.0)
    assert m["arousal_rmse"] == pytest.approx(1.0) and m["arousal_mae"] == pytest.approx(1.0)
    assert m["arousal_pearson"] == pytest.approx(1.0)
    assert m["arousal_ccc"] == pytest.approx(4 / 7)
    # dominance: the NaN-gold row is ignored; errors +1, -1
    assert m["dominance_rmse"] == pytest.approx(1.0) and m["dominance_mae"] == pytest.approx(1.0)
    assert m["dominance_pearson"] == pytest.approx(-1.0)
    assert m["dominance_ccc"] == pytest.approx(-1.0)
    json.dumps(m)
    assert all(type(v) is float for v in m.values())


def test_dimensional_metrics_undefined_values_are_nan():
    nan = float("nan")
    m = dimensional_metrics([[1, nan, 2], [1, nan, 3]], [[2, 1, 2], [3, 1, 3]])
    assert math.isnan(m["valence_pearson"])  # constant gold
    assert m["valence_rmse"] == pytest.approx(math.sqrt((1 + 4) / 2))
    assert all(math.isnan(m[f"arousal_{k}"]) for k in ("rmse", "mae", "pearson", "ccc"))
    assert m["dominance_ccc"] == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0], LABELS)
    with pytest.raises(ValueError):
        dimensional_metrics(np.zeros((2, 3)), np.zeros((3, 3)))
