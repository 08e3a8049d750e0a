"""The training loop: AdamW, linear warmup/decay, clipping, early stopping on dev loss.

Read it top to bottom: ``fit`` trains and keeps the best weights; ``predict`` runs a loader.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from emoplug.errors import EmoplugError
from emoplug.recipe import TrainSettings
from emoplug.train.data import Loader, move_to
from emoplug.train.model import parameter_groups
from emoplug.types import Targets

LossFn = Callable[[torch.Tensor, Targets], torch.Tensor]


class TrainingDiverged(EmoplugError):
    """The loss became NaN or infinite."""


@dataclass
class Outputs:
    """Model outputs of a split in the loader's order, with ids and gold targets."""

    ids: list[str]
    outputs: torch.Tensor
    targets: Targets


@dataclass
class FitResult:
    best_epoch: int
    best_dev_loss: float
    epochs_run: int
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    dev_outputs: Outputs | None = None  # the best epoch's dev predictions, for reuse


def predict(model: nn.Module, loader: Loader, device: torch.device,
            autocast: Any = None) -> Outputs:
    """Run ``model`` over ``loader`` (eval mode, no gradients, under ``autocast`` if given)."""
    model.eval()
    ids: list[str] = []
    outs, labels, avds = [], [], []
    with torch.no_grad(), (autocast() if autocast is not None else contextlib.nullcontext()):
        for batch in loader:  # outputs stay on the device until the end: no sync per batch
            ids.extend(batch["ids"])
            labels.append(batch["targets"].labels)
            avds.append(batch["targets"].avd)
            outs.append(model(move_to(batch, device)).float())
    return Outputs(ids, torch.cat(outs).cpu(), Targets(torch.cat(labels), torch.cat(avds)))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _clip_and_step(accelerator: Any, optimizer: torch.optim.Optimizer, model: nn.Module,
                   grad_clip: float | None, prepared: bool, scaler: Any) -> None:
    """Clip gradients and step. A prepared (DDP) optimizer unscales fp16 gradients itself;
    otherwise ``scaler`` (this job's own fp16 grad scaler, or None) is applied here."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        if prepared:
            accelerator.clip_grad_norm_(model.parameters(), grad_clip)
        else:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


class _LossLog:
    """An epoch's training losses, kept on the device so that no step waits for the GPU;
    checked for NaN/inf every ``CHECK_EVERY`` steps and at the end of the epoch."""

    CHECK_EVERY = 50

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.pending: list[torch.Tensor] = []
        self.pending_sizes: list[int] = []
        self.checked = 0  # steps already checked
        self.total = 0.0
        self.size = 0

    def add(self, loss: torch.Tensor, size: int) -> None:
        self.pending.append(loss.detach())
        self.pending_sizes.append(size)
        if len(self.pending) >= self.CHECK_EVERY:
            self._check()

    def _check(self) -> None:
        if not self.pending:
            return
        values = torch.stack(self.pending).float().cpu()  # the one sync per window
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise TrainingDiverged(
                f"loss became {values[first].item()} at epoch {self.epoch}, step "
                f"{self.checked + first + 1}; lower train.lr or check the inputs")
        sizes = torch.tensor(self.pending_sizes, dtype=values.dtype)
        self.total += float((values * sizes).sum())
        self.size += sum(self.pending_sizes)
        self.checked += len(values)
        self.pending, self.pending_sizes = [], []

    def mean(self) -> float:
        """Size-weighted mean loss of the epoch (after checking what is still pending)."""
        self._check()
        return self.total / max(self.size, 1)


def fit(model: nn.Module, loss_fn: LossFn, train: Loader, dev: Loader,
        settings: TrainSettings, accelerator: Any, *, encoder_lr: float | None = None,
        ddp: bool = False, epochs: int | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train ``model`` until dev loss stops improving; load the best weights back into it."""
    from transformers import get_linear_schedule_with_warmup

    start = time.perf_counter()
    epochs = epochs or settings.epochs
    model.to(accelerator.device)  # before the optimizer: fused AdamW needs its parameters there
    optimizer = torch.optim.AdamW(
        parameter_groups(model, settings.lr, encoder_lr or settings.encoder_lr,
                         settings.weight_decay),
        fused=accelerator.device.type in ("cpu", "cuda"))
    rank, world = accelerator.process_index, accelerator.num_processes
    steps_per_epoch = math.ceil(len(train) / world) if ddp else len(train)
    total = max(1, epochs * steps_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total),
                                                total)
    if ddp:
        wrapped, optimizer = accelerator.prepare(model, optimizer)
    else:  # one job per process: no DDP wrapper, nothing for the accelerator to keep
        wrapped = model
    # each job its own fp16 loss scale, so results do not depend on the jobs run before
    scaler = (torch.amp.GradScaler(accelerator.device.type)
              if not ddp and accelerator.scaler is not None else None)
    device = accelerator.device

    best = FitResult(0, math.inf, 0, 0, 0.0)
    best_state = _snapshot(model)
    stale = 0
    for epoch in range(1, epochs + 1):
        wrapped.train()
        batches = train.batch_indices()
        if ddp:  # every rank takes its share; equal counts keep the ranks in step
            batches = [batches[(i * world + rank) % len(batches)] for i in range(steps_per_epoch)]
        losses = _LossLog(epoch)
        for indices in batches:
            batch = move_to(train.batch(indices), device)
            with accelerator.autocast():
                loss = loss_fn(wrapped(batch).float(), batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                accelerator.backward(loss)
            _clip_and_step(accelerator, optimizer, wrapped, settings.grad_clip, ddp, scaler)
            scheduler.step()
            best.steps += 1
            losses.add(loss, len(batch["ids"]))
        train_loss = losses.mean()
        dev_out = predict(wrapped, dev, device, accelerator.autocast)
        dev_loss = loss_fn(dev_out.outputs, dev_out.targets).item()
        if not math.isfinite(dev_loss):
            raise TrainingDiverged(f"dev loss became {dev_loss} at epoch {epoch}")
        record = {"epoch": epoch, "train_loss": train_loss, "dev_loss": dev_loss,
                  "lr": scheduler.get_last_lr()[0]}
        best.history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
        if dev_loss < best.best_dev_loss - 1e-9:
            best.best_dev_loss, best.best_epoch, stale = dev_loss, epoch, 0
            best_state, best.dev_outputs = _snapshot(model), dev_out
        else:
            stale += 1
        best.epochs_run = epoch
        if stale >= settings.patience:
            break
    model.load_state_dict(best_state)
    best.seconds = time.perf_counter() - start
    return best
