"""Cached model inputs kept on the training device, padded into batches there.

A head job trains on inputs computed before it starts: audio features and staged or frozen
text outputs. Padding a batch of them on the host and copying it to a GPU costs more than
the head's own step (a wav2vec batch is 32 x 222 x 2304 values). Packed once per process
into one ``[frames, dim]`` tensor on the device, a batch is one gather there, and the host's
share of it is a ``[batch, frames]`` index.

``EMOPLUG_DEVICE_INPUTS`` chooses: ``auto`` (default: on for every device but the CPU, where
the host already holds the inputs), ``on`` or ``off``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emoplug.errors import EmoplugError

ENV = "EMOPLUG_DEVICE_INPUTS"
MODES = ("auto", "on", "off")


def device_inputs_mode() -> str:
    """``EMOPLUG_DEVICE_INPUTS``, checked: ``auto`` (when unset), ``on`` or ``off``."""
    raw = os.environ.get(ENV, "auto")
    mode = raw.strip().lower() or "auto"
    if mode not in MODES:
        raise EmoplugError(f"{ENV}={raw!r} is not one of {', '.join(MODES)}")
    return mode


def device_inputs_enabled(device: torch.device) -> bool:
    """Whether cached inputs are packed on ``device`` (see the module docstring)."""
    mode = device_inputs_mode()
    return mode == "on" or (mode == "auto" and device.type != "cpu")


def resolved(device: torch.device | str) -> torch.device:
    """``device`` with its index filled in (``cuda`` -> ``cuda:0``), for comparisons."""
    return torch.empty(0, device=device).device


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array copied to ``device``; asynchronous only on CUDA, where a copy from
    pageable memory is staged before the call returns (MPS may read the freed source)."""
    return torch.from_numpy(array).to(device, non_blocking=device.type == "cuda")


class PackedSequences:
    """Arrays ``[T_i, D]`` keyed by utterance id, packed into one ``[sum T_i + 1, D]`` tensor
    on a device (in their stored dtype; the last row is zeros, for padding)."""

    def __init__(self, ids: Sequence[str], lengths: Sequence[int],
                 arrays: Iterable[np.ndarray], device: torch.device):
        """Pack ``arrays`` (one per id, ``lengths[i]`` rows each; read one at a time, so a
        generator keeps the host's copy to one array)."""
        if not ids:
            raise EmoplugError("no arrays to pack")
        self.rows = {utt_id: row for row, utt_id in enumerate(ids)}
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.cumsum(self.lengths) - self.lengths
        self.device = resolved(device)
        flat: torch.Tensor | None = None
        for utt_id, offset, length, array in zip(ids, self.offsets, self.lengths, arrays,
                                                 strict=True):
            if array.ndim != 2 or array.shape[0] != length:
                raise EmoplugError(f"{utt_id}: array of shape {array.shape} does not have "
                                   f"the {length} rows announced")
            values = torch.from_numpy(np.ascontiguousarray(array))
            if flat is None:
                flat = torch.zeros((int(self.lengths.sum()) + 1, array.shape[1]),
                                   dtype=values.dtype, device=self.device)
            elif array.shape[1] != flat.shape[1] or values.dtype != flat.dtype:
                raise EmoplugError(f"{utt_id}: {values.dtype} width {array.shape[1]} differs "
                                   f"from the first array's {flat.dtype} width {flat.shape[1]}")
            flat[offset:offset + length] = values
        assert flat is not None
        self.flat = flat
        self.padding_row = self.flat.shape[0] - 1

    def covers(self, ids: Sequence[str], device: torch.device) -> bool:
        """Whether every id of ``ids`` is packed here, on ``device``."""
        return self.device == resolved(device) and all(i in self.rows for i in ids)

    def _rows(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.rows[i] for i in ids), dtype=np.int64, count=len(ids))

    def pad(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, D]`` float32 (zero padded) and a ``[B, T]`` bool mask, on the device."""
        rows = self._rows(ids)
        lengths = self.lengths[rows]
        steps = np.arange(max(int(lengths.max(initial=0)), 1))
        mask = steps < lengths[:, None]
        index = np.where(mask, self.offsets[rows][:, None] + steps, self.padding_row)
        values = self.flat[to_device(index, self.device)]
        return values.float(), to_device(mask, self.device)

    def first(self, ids: Sequence[str]) -> torch.Tensor:
        """The first row of each id's array, ``[B, D]`` float32 (for one-row arrays)."""
        return self.flat[to_device(self.offsets[self._rows(ids)], self.device)].float()


@dataclass
class DeviceInputs:
    """A job's packed inputs: audio features and/or cached text outputs (sequence, pooled)."""

    audio: PackedSequences | None = None
    text_sequence: PackedSequences | None = None
    text_pooled: PackedSequences | None = None

    def text_batch(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sequence, mask, pooled)`` as the collator's ``text_cached`` entry."""
        assert self.text_sequence is not None and self.text_pooled is not None
        sequence, mask = self.text_sequence.pad(ids)
        return sequence, mask, self.text_pooled.first(ids)


def pack_text(outputs: dict[str, tuple[np.ndarray, np.ndarray]], device: torch.device
              ) -> tuple[PackedSequences, PackedSequences]:
    """Cached text outputs ``{id: (sequence [T, H], pooled [H])}`` packed on ``device``."""
    ids = list(outputs)
    return (PackedSequences(ids, [len(outputs[i][0]) for i in ids],
                            (outputs[i][0] for i in ids), device),
            PackedSequences(ids, [1] * len(ids), (outputs[i][1][None] for i in ids), device))
