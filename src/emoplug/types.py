"""The data types that components exchange. Light to import: torch appears only in hints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

#: Order of the dimensional targets everywhere in emoplug (IEMOCAP writes ``[V, A, D]``).
AVD_NAMES: tuple[str, str, str] = ("valence", "arousal", "dominance")


@dataclass
class Utterance:
    """One labelled (or unlabelled) utterance of a corpus."""

    id: str
    speaker: str
    session: str
    text: str | None = None
    audio: str | None = None
    label: str | None = None
    avd: tuple[float, float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


#: The ``Corpus.skipped`` reason for an audio file a dataset names that does not exist;
#: ``emoplug validate`` and ``emoplug run`` refuse a corpus with any.
MISSING_AUDIO = "missing WAV"


@dataclass
class Corpus:
    """A loaded dataset: ordered label set, AVD scale, utterances and what was skipped."""

    name: str
    labels: tuple[str, ...]
    utterances: list[Utterance]
    avd_scale: tuple[float, float] = (1.0, 5.0)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def by_id(self) -> dict[str, Utterance]:
        return {u.id: u for u in self.utterances}

    def skip(self, reason: str, example: str) -> None:
        """Count one skipped item under ``reason``, keeping a few examples for the report."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(example)


@dataclass(frozen=True)
class DatasetInfo:
    """What planning needs to know about a dataset without reading it; ``corpora``: the
    names of the corpora a recipe's ``datasets:`` combines (empty for one ``dataset:``)."""

    sessions: tuple[str, ...]
    speakers: tuple[str, ...] = ()
    corpora: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fold:
    """One train/dev/test split. ``meta`` records e.g. ``speaker_dependent: True``."""

    name: str
    train: tuple[str, ...]
    dev: tuple[str, ...]
    test: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Encoded:
    """An encoder's output for a batch.

    ``sequence`` is ``[B, T, H]``, ``mask`` is ``[B, T]`` (bool, True = real frame/token),
    ``pooled`` is ``[B, H]``.
    """

    sequence: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.pooled.shape[-1])


@dataclass
class Targets:
    """Gold targets of a batch: ``labels`` ``[B]`` long (-1 = none), ``avd`` ``[B, 3]`` float
    on the corpus scale (NaN = none)."""

    labels: torch.Tensor
    avd: torch.Tensor


@dataclass
class Decoded:
    """Predictions of an approach for a batch, as numpy arrays.

    ``labels`` ``[B]`` class indices; ``probs`` ``[B, C]`` or None; ``avd`` ``[B, 3]`` on the
    corpus scale, or None when the approach predicts no dimensions.
    """

    labels: np.ndarray
    probs: np.ndarray | None = None
    avd: np.ndarray | None = None
