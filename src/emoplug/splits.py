"""Splitting helpers the core and protocol plugins share (exported from ``emoplug``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def stratified_sample(ids: Sequence[str], labels: Sequence[object], fraction: float,
                      rng: Any) -> list[str]:
    """``round(fraction * n)`` ids of each label, drawn with ``rng`` (a NumPy ``Generator``).
    Labels are visited in sorted order (``None`` as ``"None"``) and each label's ids in the
    order given, so the draw depends only on the ids, the labels and the generator's state."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for utt_id, label in zip(ids, labels, strict=True):
        by_label[str(label)].append(utt_id)
    picked: list[str] = []
    for label in sorted(by_label):
        members = by_label[label]
        take = round(fraction * len(members))
        picked.extend(members[i] for i in rng.permutation(len(members))[:take])
    return picked
