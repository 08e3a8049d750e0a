"""Numeric helpers shared by the featurizers (numpy + librosa; imported lazily)."""

from __future__ import annotations

import math

import librosa
import numpy as np


def frame_sizes(sample_rate: int, win_ms: float, hop_ms: float) -> tuple[int, int, int]:
    """``(win_length, hop_length, n_fft)`` in samples; ``n_fft`` is the next power of two."""
    win = max(1, round(sample_rate * win_ms / 1000))
    hop = max(1, round(sample_rate * hop_ms / 1000))
    return win, hop, 1 << math.ceil(math.log2(win))


def add_deltas(features: np.ndarray, order: int) -> np.ndarray:
    """``[frames, d]`` -> ``[frames, d * (order + 1)]``: features, deltas, delta-deltas."""
    if order == 0:
        return features
    parts = [features] + [
        librosa.feature.delta(features, order=k, axis=0, mode="nearest")
        for k in range(1, order + 1)
    ]
    return np.concatenate(parts, axis=1)


def cmvn(features: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation of each column of ``[frames, d]``."""
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True)
    return (features - mean) / np.maximum(std, 1e-5)


def mean_std(features: np.ndarray) -> np.ndarray:
    """``[frames, d]`` -> ``[1, 2 * d]``: each column's mean over the utterance, then its
    standard deviation."""
    return np.concatenate([features.mean(axis=0), features.std(axis=0)])[None, :]
