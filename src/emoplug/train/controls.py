"""Learning controls: cells trained on targets that carry no information about the inputs.

A ``permuted_labels`` cell trains on the training fold's targets shuffled among its
utterances (each utterance's category and valence/arousal/dominance move together, so the
label distribution and the AVD-to-category pairs stay those of the fold); dev and test keep
their gold targets. Such a cell can only learn the label prior, so its test scores should sit
at the chance floor: a control scoring above it points at leakage.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np

from emoplug.errors import EmoplugError
from emoplug.train.data import Example

PERMUTED_LABELS = "permuted_labels"


def permuted_targets(examples: Sequence[Example], seed: int, fold: str) -> list[Example]:
    """Copies of ``examples`` whose targets (label and AVD as one unit) are permuted among
    them, by a generator seeded from ``(seed, fold)``: the same inputs give the same result."""
    rng = np.random.default_rng([seed, zlib.crc32(fold.encode())])
    order = rng.permutation(len(examples))
    return [dataclasses.replace(example, label=examples[j].label, avd=examples[j].avd)
            for example, j in zip(examples, order, strict=True)]


def apply_control(control: str | None, train: Sequence[Example], seed: int,
                  fold: str) -> list[Example]:
    """The training examples a cell with ``control`` trains on (unchanged without one)."""
    if control is None:
        return list(train)
    if control == PERMUTED_LABELS:
        return permuted_targets(train, seed, fold)
    raise EmoplugError(f"unknown control {control!r}; known: {PERMUTED_LABELS}")
