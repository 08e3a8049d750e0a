"""Stage-2 mappers of the two-stage approach: standardised AVD -> category.

``fit_mapper`` fits a scikit-learn model and keeps only its parameters, as plain JSON;
``predict_proba`` is a small numpy forward pass over those parameters. Every prediction, before
and after saving, goes through the same numpy code, so a reloaded mapper predicts identically.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emoplug import EmoplugError
from emoplug_approaches.statistics import softmax

MAPPERS = ("logistic", "mlp", "knn")


def fit_mapper(kind: str, points: np.ndarray, labels: np.ndarray, *, knn_k: int,
               mlp_hidden: int, seed: int = 0) -> dict[str, Any]:
    """Fit a ``kind`` mapper on ``points [N, 3]`` and class indices ``labels [N]``."""
    classes = np.unique(labels)
    if len(classes) < 2:
        raise EmoplugError(f"two_stage mapper: the training fold has {len(classes)} class(es) "
                           "with AVD targets; at least two are needed")
    state: dict[str, Any] = {"kind": kind, "classes": classes.tolist()}
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000, random_state=seed).fit(points, labels)
        state.update(coef=model.coef_.tolist(), intercept=model.intercept_.tolist())
    elif kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden_layer_sizes=(mlp_hidden,), max_iter=2000,
                              random_state=seed).fit(points, labels)
        state.update(coefs=[w.tolist() for w in model.coefs_],
                     intercepts=[b.tolist() for b in model.intercepts_],
                     activation=model.activation, out_activation=model.out_activation_)
    elif kind == "knn":
        state.update(points=np.asarray(points, dtype=float).tolist(),
                     labels=np.asarray(labels).tolist(), k=min(knn_k, len(labels)))
    else:
        raise EmoplugError(f"two_stage: unknown mapper {kind!r} (choose {', '.join(MAPPERS)})")
    return state


def predict_proba(state: dict[str, Any], points: np.ndarray) -> np.ndarray:
    """Probabilities ``[N, len(state['classes'])]`` of the fitted classes, in that order."""
    x = np.asarray(points, dtype=float)
    if state["kind"] == "logistic":
        scores = x @ np.asarray(state["coef"]).T + np.asarray(state["intercept"])
        return _sigmoid_or_softmax(scores, "logistic" if scores.shape[1] == 1 else "softmax")
    if state["kind"] == "mlp":
        hidden = x
        layers = list(zip(state["coefs"], state["intercepts"], strict=True))
        for weights, bias in layers[:-1]:
            hidden = _ACTIVATIONS[state["activation"]](hidden @ np.asarray(weights)
                                                       + np.asarray(bias))
        weights, bias = layers[-1]
        scores = hidden @ np.asarray(weights) + np.asarray(bias)
        return _sigmoid_or_softmax(scores, state["out_activation"])
    return _knn_proba(state, x)


def _sigmoid_or_softmax(scores: np.ndarray, out_activation: str) -> np.ndarray:
    if out_activation == "logistic":  # binary: one score for the second class
        positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.stack([1.0 - positive, positive], axis=1)
    return softmax(scores)


_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "identity": lambda z: z,
}


def _knn_proba(state: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Share of each class among the ``k`` nearest training points (Euclidean, ties broken
    by training order)."""
    train = np.asarray(state["points"], dtype=float)
    classes = np.asarray(state["classes"])
    column = np.searchsorted(classes, np.asarray(state["labels"]))
    distances = ((x[:, None, :] - train[None, :, :]) ** 2).sum(axis=-1)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, : state["k"]]
    proba = np.zeros((len(x), len(classes)))
    for j in range(state["k"]):
        proba[np.arange(len(x)), column[nearest[:, j]]] += 1.0
    return proba / state["k"]
