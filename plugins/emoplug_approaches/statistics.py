"""Target statistics the approaches keep: AVD standardisation and balanced class weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emoplug import EmoplugError, Targets


def to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor (any device, with or without grad) or array as a numpy array."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
        tensor = tensor.float() if tensor.is_floating_point() else tensor
        return tensor.numpy()
    return np.asarray(tensor)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def labelled_avd_rows(avd: np.ndarray) -> np.ndarray:
    """Boolean ``[N]``: rows whose three AVD values are all known."""
    return np.isfinite(avd).all(axis=1)


@dataclass
class AvdScaler:
    """Per-dimension mean and std of the training AVD (corpus scale)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, targets: Targets, approach: str) -> AvdScaler:
        avd = to_numpy(targets.avd).reshape(-1, 3)
        rows = avd[labelled_avd_rows(avd)]
        if len(rows) == 0:
            raise EmoplugError(f"approach '{approach}' needs valence/arousal/dominance targets, "
                               "but the training set has none (use approach 'direct')")
        std = rows.std(axis=0)
        return cls(rows.mean(axis=0), np.where(std > 1e-8, std, 1.0))

    def standardise(self, avd: np.ndarray) -> np.ndarray:
        return (avd - self.mean) / self.std

    def destandardise(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    def state_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, list[float]]) -> AvdScaler:
        return cls(np.asarray(state["mean"], dtype=float), np.asarray(state["std"], dtype=float))


def class_weights(mode: str, targets: Targets, n_classes: int) -> list[float] | None:
    """``None`` for ``none``; for ``balanced``, ``n / (k * count_c)`` over the ``k`` classes
    present in the training labels (scikit-learn's formula), 1.0 for absent classes."""
    if mode == "none":
        return None
    labels = to_numpy(targets.labels).astype(int)
    counts = np.bincount(labels[labels >= 0], minlength=n_classes).astype(float)
    present = counts > 0
    if not present.any():
        raise EmoplugError("class_weights: balanced needs labelled training rows, found none")
    weights = np.ones(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.tolist()
