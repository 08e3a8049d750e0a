"""Cohorts: head jobs that read the same inputs, trained in lockstep in one process.

Cells of one (text stage, audio features, fold, seed) differ only in fusion and approach, so
they see the same examples in the same batch order. A cohort collates each batch once and
steps every member's own model, optimizer and early stopping on it. Each member draws its
random numbers from its own saved generator states (:class:`RngStreams`), so a job's results
are bitwise the same whether it ran alone or in a cohort of any size.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from emoplug.recipe import Job, audio_mode


def cohort_key(job: Job, stage_of: Callable[[Job], str | None]) -> tuple[Any, ...] | None:
    """What a job's inputs and batches are made of; jobs with equal keys can share a cohort.
    None for jobs that fine-tune a text or speech encoder (nothing worth sharing: the
    encoder dominates), for full-batch (``lbfgs``) jobs, which take no minibatch steps, and for
    jobs that tune or select on inner folds (many trainings of their own)."""
    text = job.cell.config["text"]
    if text is not None and text.get("mode", "finetune") == "finetune":
        return None
    if audio_mode(job.cell.config["audio"]) == "finetune":
        return None
    if job.train_config()["optimizer"] == "lbfgs" or "tune" in job.shared_config:
        return None
    protocol = job.cell.config.get("protocol") or job.shared_config["protocol"]
    if protocol.get("dev") == "inner_folds":
        return None
    text_part = (None if text is None else
                 stage_of(job) or json.dumps(text, sort_keys=True))
    audio = job.cell.config["audio"]
    return (text_part, None if audio is None else json.dumps(audio, sort_keys=True),
            job.fold, job.seed, job.cell.control,  # a control trains on targets of its own
            json.dumps(job.cell.config.get("train"), sort_keys=True))  # its own batch size...


def group_cohorts(jobs: list[Job], stage_of: Callable[[Job], str | None],
                  size: int) -> list[list[Job]]:
    """``jobs`` split into cohorts of at most ``size`` jobs with equal keys, in first-seen
    order; jobs without a key (or ``size`` 1) stay alone."""
    groups: dict[Any, list[list[Job]]] = {}
    order: list[list[Job]] = []
    for job in jobs:
        key = cohort_key(job, stage_of) if size > 1 else None
        if key is None:
            order.append([job])
            continue
        chunks = groups.setdefault(key, [])
        if not chunks or len(chunks[-1]) >= size:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(job)
    return order


class RngStreams:
    """One job's random number generator states, swapped into the global generators while
    that job's code runs: torch's (CPU and the device's) around every call, Python's and
    NumPy's around building and evaluation (swapping those costs ~0.15 ms, too much for
    every training step; the training loop and the bundled modules do not draw from them)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.device_rng = getattr(torch, device.type, None) if device.type != "cpu" else None
        if self.device_rng is not None and not hasattr(self.device_rng, "get_rng_state"):
            self.device_rng = None
        self.torch_state = self._torch_state()
        self.host_state = (random.getstate(), np.random.get_state())

    def _torch_state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return (torch.get_rng_state(),
                self.device_rng.get_rng_state(self.device) if self.device_rng is not None
                else None)

    def _set_torch_state(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            self.device_rng.set_rng_state(state[1], self.device)

    @contextmanager
    def active(self, host: bool = False) -> Iterator[None]:
        """Run the block on this job's torch streams (and Python's and NumPy's with
        ``host``); the previous global states come back after."""
        outer = self._torch_state()
        self._set_torch_state(self.torch_state)
        if host:
            outer_host = (random.getstate(), np.random.get_state())
            random.setstate(self.host_state[0])
            np.random.set_state(self.host_state[1])
        try:
            yield
        finally:
            self.torch_state = self._torch_state()
            self._set_torch_state(outer)
            if host:
                self.host_state = (random.getstate(), np.random.get_state())
                random.setstate(outer_host[0])
                np.random.set_state(outer_host[1])
