"""Examples, length-bucketed batching and collation for one job's splits."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emoplug.train.packed import DeviceInputs
from emoplug.types import Targets


@dataclass
class Example:
    """One utterance's model inputs and gold targets."""

    id: str
    label: int
    avd: tuple[float, float, float]
    text: str | None = None
    text_cached: tuple[np.ndarray, np.ndarray] | None = None  # (sequence [T,H], pooled [H])
    audio: Callable[[], np.ndarray] | None = None  # loads features [F, D] on demand (stored dtype)
    frames: int | None = None  # audio feature frames, known without loading them

    def length(self) -> int:
        """A size proxy for bucketing: frames, else tokens, else words."""
        if self.frames is not None:
            return self.frames
        if self.audio is not None:
            return int(self.audio().shape[0])
        if self.text_cached is not None:
            return int(self.text_cached[0].shape[0])
        return len((self.text or "").split())


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int | Sequence[int],
                     bucket: bool, chunk_batches: int = 50) -> list[list[int]]:
    """Shuffled batches of indices; with ``bucket``, items are sorted by length within
    shuffled chunks of ``chunk_batches`` batches, so each batch holds similar lengths.
    ``seed`` may be a sequence, e.g. ``(seed, epoch)``: independent streams per entry."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    if bucket:
        chunk = batch_size * chunk_batches
        pieces = [order[i:i + chunk] for i in range(0, len(order), chunk)]
        order = np.concatenate([p[np.argsort([lengths[i] for i in p], kind="stable")]
                                for p in pieces]) if pieces else order
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def eval_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches sorted by length (no shuffling) for evaluation."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def pad_arrays(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[T_i, D]`` arrays into ``[B, T, D]`` float32 with a ``[B, T]`` bool mask.
    Padded in the arrays' own dtype, then cast by torch (numpy's float16 casts are slow)."""
    longest = max(max(a.shape[0] for a in arrays), 1)
    dim = arrays[0].shape[1]
    out = np.zeros((len(arrays), longest, dim), dtype=np.result_type(*arrays))
    mask = np.zeros((len(arrays), longest), dtype=bool)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = True
    return torch.from_numpy(out).float(), torch.from_numpy(mask)


class Collator:
    """Turns a list of examples into a batch dict (``text``/``audio`` inputs, ``targets``).
    Inputs packed in ``device_inputs`` are padded on their device instead of the host."""

    def __init__(self, tokenize: Callable[[list[str]], dict[str, torch.Tensor]] | None,
                 device_inputs: DeviceInputs | None = None):
        self.tokenize = tokenize
        self.device_inputs = device_inputs or DeviceInputs()

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        ids = [e.id for e in examples]
        batch: dict[str, Any] = {"ids": ids}
        first = examples[0]
        packed = self.device_inputs
        if first.text_cached is not None and packed.text_sequence is not None:
            batch["text_cached"] = packed.text_batch(ids)
        elif first.text_cached is not None:
            seq, mask = pad_arrays([e.text_cached[0] for e in examples])
            pooled = torch.from_numpy(np.stack([e.text_cached[1] for e in examples])).float()
            batch["text_cached"] = (seq, mask, pooled)
        elif first.text is not None:
            assert self.tokenize is not None
            batch["text_tokens"] = self.tokenize([e.text or "" for e in examples])
        if first.audio is not None and packed.audio is not None:
            batch["audio"] = packed.audio.pad(ids)
        elif first.audio is not None:
            batch["audio"] = pad_arrays([e.audio() for e in examples])
        batch["targets"] = targets_of(examples)
        return batch


def targets_of(examples: Sequence[Example]) -> Targets:
    """Gold class indices and AVD of ``examples``, without building model inputs."""
    return Targets(labels=torch.tensor([e.label for e in examples], dtype=torch.long),
                   avd=torch.tensor(np.array([e.avd for e in examples], dtype=np.float32)))


class Loader:
    """An iterable of collated batches over ``examples``: bucketed-shuffled for training
    (a new order every epoch), length-sorted for evaluation."""

    def __init__(self, examples: Sequence[Example], collate: Collator, batch_size: int,
                 train: bool, seed: int = 0, bucket: bool = True):
        self.examples = list(examples)
        self.collate = collate
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.bucket = bucket
        self.epoch = 0
        self.lengths = [e.length() for e in self.examples]

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def batch_indices(self) -> list[list[int]]:
        """The index lists of one pass (a training loader moves on to its next epoch)."""
        if not self.train:
            return eval_batches(self.lengths, self.batch_size)
        batches = bucketed_batches(self.lengths, self.batch_size, (self.seed, self.epoch),
                                   self.bucket)
        self.epoch += 1
        return batches

    def batch(self, indices: list[int]) -> dict[str, Any]:
        """Collate the examples at ``indices``."""
        return self.collate([self.examples[i] for i in indices])

    def targets(self) -> Targets:
        """The gold targets of an evaluation pass, in the order its batches give them."""
        assert not self.train, "a training loader's order changes every epoch"
        return targets_of([self.examples[i] for b in self.batch_indices() for i in b])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for indices in self.batch_indices():
            yield self.batch(indices)


def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A copy of ``batch`` with every tensor on ``device``."""
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=device.type == "cuda")  # see to_device
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return tuple(move(v) for v in value)
        if isinstance(value, Targets):
            return Targets(move(value.labels), move(value.avd))
        return value
    return {k: move(v) for k, v in batch.items()}
