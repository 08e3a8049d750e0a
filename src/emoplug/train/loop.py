"""The training loop: AdamW, linear warmup/decay, clipping, early stopping on dev loss.

``CellTrainer`` holds one model's training state and steps; ``train_cohort`` drives one or
several trainers over shared batches; ``fit`` trains one model and keeps its best weights;
``predict`` runs a loader.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from emoplug.errors import EmoplugError
from emoplug.recipe import TrainSettings
from emoplug.train.data import Loader, move_to
from emoplug.train.model import parameter_groups
from emoplug.train.signals import raise_if_stopped
from emoplug.types import Targets

LossFn = Callable[[torch.Tensor, Targets], torch.Tensor]
#: learning rates of pretrained encoders by modality (missing or None: train.encoder_lr)
EncoderLr = dict[str, float | None] | None
#: told after each training batch: (epoch, epochs, batch, batches of the epoch)
OnBatch = Callable[[int, int, int, int], None]


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
    #: ``early_stopping`` (patience ran out) or ``epoch_limit``; ``fixed_epochs`` for a
    #: refit without dev (epochs chosen beforehand); ``converged`` or ``iteration_limit``
    #: for a full-batch L-BFGS fit; None while training
    stopped_by: str | None = None
    epoch_limit: int = 0

    @property
    def stopping(self) -> dict[str, Any]:
        """How training ended, for ``result.json``: ``stopped_by``, the ``epoch_limit``, and
        ``dev_loss_improving``: a new best dev loss in the last tenth of the epochs run (at
        least in the last epoch), i.e. the loss was still falling when training ended."""
        window = max(1, self.epochs_run // 10)
        epochs = self.stopped_by in ("early_stopping", "epoch_limit")
        return {"stopped_by": self.stopped_by, "epoch_limit": self.epoch_limit,
                "dev_loss_improving": epochs and self.best_epoch > self.epochs_run - window}


class _Collected:
    """A split's model outputs gathered batch by batch (they stay on the device until
    ``outputs``: no sync per batch)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.outs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.avds: list[torch.Tensor] = []

    def add(self, model: nn.Module, batch: dict[str, Any], autocast: Any) -> None:
        with torch.no_grad(), (autocast() if autocast is not None else contextlib.nullcontext()):
            out = model(batch).float()
        self.ids.extend(batch["ids"])
        self.labels.append(batch["targets"].labels)
        self.avds.append(batch["targets"].avd)
        self.outs.append(out)

    def outputs(self) -> Outputs:
        return Outputs(self.ids, torch.cat(self.outs).cpu(),
                       Targets(torch.cat(self.labels).cpu(), torch.cat(self.avds).cpu()))


def predict(model: nn.Module, loader: Iterable[dict[str, Any]], device: torch.device,
            autocast: Any = None) -> Outputs:
    """Run ``model`` over ``loader`` (eval mode, no gradients, under ``autocast`` if given)."""
    model.eval()
    collected = _Collected()
    for batch in loader:
        collected.add(model, move_to(batch, device), autocast)
    return collected.outputs()


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


class CellTrainer:
    """One model's training: AdamW, linear warmup/decay, clipping, early stopping on dev loss,
    the best weights kept. :func:`fit` drives one; :func:`train_cohort` drives several on the
    same batches, each on its own random streams (``rng``, see ``cohort.py``). Without
    ``scored`` there is no dev split: it trains exactly ``epochs`` epochs and keeps the
    last weights (a refit whose epoch count was chosen beforehand)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, settings: TrainSettings,
                 accelerator: Any, steps_per_epoch: int, epochs: int, *,
                 encoder_lr: EncoderLr = None, ddp: bool = False,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                 rng: Any = None, scored: bool = True):
        from transformers import get_linear_schedule_with_warmup

        start = time.perf_counter()
        self.model, self.loss_fn, self.settings = model, loss_fn, settings
        self.accelerator, self.epochs, self.ddp = accelerator, epochs, ddp
        self.on_epoch, self.rng, self.scored = on_epoch, rng, scored
        model.to(accelerator.device)  # before the optimizer: fused AdamW needs its parameters there
        rates = {m: (encoder_lr or {}).get(m) or settings.encoder_lr for m in ("text", "audio")}
        optimizer = torch.optim.AdamW(
            parameter_groups(model, settings.lr, rates, settings.weight_decay),
            fused=accelerator.device.type in ("cpu", "cuda"))
        total = max(1, epochs * steps_per_epoch)
        self.scheduler = get_linear_schedule_with_warmup(
            optimizer, int(settings.warmup_ratio * total), total)
        if ddp:
            self.wrapped, self.optimizer = accelerator.prepare(model, optimizer)
        else:  # no DDP wrapper: nothing for the accelerator to keep between jobs
            self.wrapped, self.optimizer = model, optimizer
        # each job its own fp16 loss scale, so results do not depend on the jobs run before
        self.scaler = (torch.amp.GradScaler(accelerator.device.type)
                       if not ddp and accelerator.scaler is not None else None)
        self.result = FitResult(0, math.inf, 0, 0, 0.0, epoch_limit=epochs)
        self.best_state = _snapshot(model)
        self.stale = 0
        self.active = True
        self.error: Exception | None = None
        self.error_traceback = ""
        self.losses = _LossLog(0)
        self.dev = _Collected()
        self.seconds = time.perf_counter() - start

    def call(self, method: Callable[..., None], *args: Any, isolate: bool) -> None:
        """Run one of this trainer's steps on its random streams, timed. With ``isolate``,
        an exception stops only this trainer: it is kept in ``error`` (its traceback as
        text) and the trainer lets go of its memory, so that the rest of its cohort goes on."""
        start = time.perf_counter()
        try:
            with self.rng.active() if self.rng is not None else contextlib.nullcontext():
                method(*args)
        except Exception as exc:
            if not isolate:
                raise
            self.error, self.active = exc, False
            self.error_traceback = "".join(traceback.format_exception(exc))
            exc.__traceback__ = None  # its frames hold the batch, the loss and its graph
            self.release()
        finally:
            self.seconds += time.perf_counter() - start

    def release(self) -> None:
        """Drop the optimizer state, the kept weights and outputs of a failed trainer."""
        self.optimizer.state.clear()
        self.best_state, self.result.dev_outputs = {}, None
        self.losses, self.dev = _LossLog(0), _Collected()
        self.model.to("cpu")

    def start_epoch(self, epoch: int) -> None:
        self.wrapped.train()
        self.losses = _LossLog(epoch)

    def step(self, batch: dict[str, Any]) -> None:
        with self.accelerator.autocast():
            loss = self.loss_fn(self.wrapped(batch).float(), batch["targets"])
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            self.accelerator.backward(loss)
        _clip_and_step(self.accelerator, self.optimizer, self.wrapped, self.settings.grad_clip,
                       self.ddp, self.scaler)
        self.scheduler.step()
        self.result.steps += 1
        self.losses.add(loss, len(batch["ids"]))

    def start_eval(self) -> None:
        self.wrapped.eval()
        self.dev = _Collected()

    def eval_batch(self, batch: dict[str, Any]) -> None:
        self.dev.add(self.wrapped, batch, self.accelerator.autocast)

    def end_epoch(self, epoch: int) -> None:
        """Score the epoch on dev, keep the weights if best, stop when patience runs out."""
        train_loss = self.losses.mean()
        if not self.scored:
            self._end_unscored_epoch(epoch, train_loss)
            return
        dev_out = self.dev.outputs()
        dev_loss = self.loss_fn(dev_out.outputs, dev_out.targets).item()
        if not math.isfinite(dev_loss):
            raise TrainingDiverged(f"dev loss became {dev_loss} at epoch {epoch}")
        record = {"epoch": epoch, "train_loss": train_loss, "dev_loss": dev_loss,
                  "lr": self.scheduler.get_last_lr()[0]}
        best = self.result
        best.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(epoch, record)
        if dev_loss < best.best_dev_loss - 1e-9:
            best.best_dev_loss, best.best_epoch, self.stale = dev_loss, epoch, 0
            self.best_state, best.dev_outputs = _snapshot(self.model), dev_out
        else:
            self.stale += 1
        best.epochs_run = epoch
        if self.stale >= self.settings.patience:
            self.active, best.stopped_by = False, "early_stopping"
        elif epoch >= self.epochs:
            self.active, best.stopped_by = False, "epoch_limit"

    def _end_unscored_epoch(self, epoch: int, train_loss: float) -> None:
        record = {"epoch": epoch, "train_loss": train_loss,
                  "lr": self.scheduler.get_last_lr()[0]}
        self.result.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(epoch, record)
        self.result.best_epoch = self.result.epochs_run = epoch
        if epoch >= self.epochs:
            self.active, self.result.stopped_by = False, "fixed_epochs"

    def finish(self) -> FitResult:
        """Load the best weights back into the model (the last ones without dev); the
        fit's record."""
        if self.scored:
            self.model.load_state_dict(self.best_state)
        self.result.seconds = self.seconds
        return self.result


def calibrated_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that gather statistics of the training split before training
    (``begin_calibration`` / ``end_calibration``, e.g. the audio encoders' standardizers)."""
    return [m for m in model.modules() if hasattr(m, "begin_calibration")]


def calibrate(models: Sequence[nn.Module], train: Loader, device: torch.device) -> None:
    """One pass over the training split, in order and without gradients, for the calibrated
    modules of ``models`` (those with none are left alone, and their random streams are not
    touched); each then fixes its statistics."""
    modules = [m for model in models for m in calibrated_modules(model)]
    if not modules:
        return
    for module in modules:
        module.begin_calibration()
    chosen = [model for model in models if calibrated_modules(model)]
    modes = [model.training for model in chosen]
    for model in chosen:
        model.eval()
    with torch.no_grad():
        for start in range(0, len(train.examples), train.batch_size):
            batch = move_to(train.batch(list(range(
                start, min(start + train.batch_size, len(train.examples))))), device)
            for model in chosen:
                model(batch)
    for model, mode in zip(chosen, modes, strict=True):
        model.train(mode)
    for module in modules:
        module.end_calibration()


def steps_per_epoch(train: Loader, shard: tuple[int, int] | None) -> int:
    """Optimizer steps per epoch: every batch, or a rank's equal share of them (DDP)."""
    return len(train) if shard is None else math.ceil(len(train) / shard[1])


def train_cohort(trainers: Sequence[CellTrainer], train: Loader,
                 dev: Iterable[dict[str, Any]] | None,
                 device: torch.device, shard: tuple[int, int] | None = None,
                 isolate: bool = True, on_batch: OnBatch | None = None) -> None:
    """Train every trainer on each batch of ``train`` (collated once), then score each on
    ``dev`` (None: trainers without a dev split), epoch after epoch until all have stopped.
    ``shard`` (rank, world): this rank's share of each epoch's batches, equal counts on
    every rank (DDP). With ``isolate`` a trainer that raises stops alone (see
    ``CellTrainer.call``); without, the error propagates. The time spent collating is
    shared equally by the trainers it served.
    ``on_batch(epoch, epochs, batch, batches)`` is told after every training batch."""

    def each(method: str, *args: Any) -> None:
        for trainer in trainers:
            if trainer.active:
                trainer.call(getattr(trainer, method), *args, isolate=isolate)

    def share(started: float) -> None:
        served = [t for t in trainers if t.active]
        for trainer in served:
            trainer.seconds += (time.perf_counter() - started) / len(served)

    calibrate([t.model for t in trainers], train, device)
    epoch, epochs = 0, max(t.epochs for t in trainers)
    while any(t.active for t in trainers):
        epoch += 1
        each("start_epoch", epoch)
        started = time.perf_counter()
        batches = train.batch_indices()
        if shard is not None:
            rank, world = shard
            batches = [batches[(i * world + rank) % len(batches)]
                       for i in range(steps_per_epoch(train, shard))]
        share(started)
        for number, indices in enumerate(batches, 1):
            raise_if_stopped()
            if not any(t.active for t in trainers):
                break
            started = time.perf_counter()
            batch = move_to(train.batch(indices), device)
            share(started)
            each("step", batch)
            if on_batch is not None:
                on_batch(epoch, epochs, number, len(batches))
        each("start_eval")
        started = time.perf_counter()
        for batch in dev or ():
            if not any(t.active for t in trainers):
                break
            batch = move_to(batch, device)
            share(started)
            each("eval_batch", batch)
            started = time.perf_counter()
        share(started)
        each("end_epoch", epoch)


def fit(model: nn.Module, loss_fn: LossFn, train: Loader, dev: Loader | None,
        settings: TrainSettings, accelerator: Any, *, encoder_lr: EncoderLr = None,
        ddp: bool = False, epochs: int | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        on_batch: OnBatch | None = None) -> FitResult:
    """Train ``model`` until dev loss stops improving and load the best weights back into
    it (``adamw``), or for exactly ``epochs`` without a ``dev`` loader; or, with
    ``settings.optimizer: lbfgs``, fit it to convergence (:func:`fit_lbfgs`)."""
    if settings.optimizer == "lbfgs":
        return fit_lbfgs(model, loss_fn, train, dev, settings, accelerator, on_epoch=on_epoch)
    shard = (accelerator.process_index, accelerator.num_processes) if ddp else None
    trainer = CellTrainer(model, loss_fn, settings, accelerator, steps_per_epoch(train, shard),
                          epochs or settings.epochs, encoder_lr=encoder_lr, ddp=ddp,
                          on_epoch=on_epoch, scored=dev is not None)
    train_cohort([trainer], train, dev, accelerator.device, shard, isolate=False,
                 on_batch=on_batch)
    return trainer.finish()


def fit_lbfgs(model: nn.Module, loss_fn: LossFn, train: Loader, dev: Loader,
              settings: TrainSettings, accelerator: Any, *,
              on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Fit ``model`` to convergence with full-batch L-BFGS (strong Wolfe line search): the
    objective is the mean training loss plus ``||W||^2 / (2 C n)`` over the weight matrices
    (biases and norms unpenalised), which for a linear model under cross-entropy is
    scikit-learn's ``LogisticRegression(C=C)`` objective exactly. Dropout is off (the model
    runs in eval mode, so the objective is deterministic); the dev split is scored once, at
    the end. Converged when the largest gradient entry is at most ``settings.tol``."""
    start = time.perf_counter()
    device = accelerator.device
    model.to(device)
    calibrate([model], train, device)
    model.eval().double()  # float32 rounding would stop the search short of the optimum
    batches = [_in_double(move_to(train.batch(list(range(
        i, min(i + train.batch_size, len(train.examples))))), device))
        for i in range(0, len(train.examples), train.batch_size)]
    n = len(train.examples)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = [p for p in params if p.ndim >= 2]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=settings.max_iter,
                                  max_eval=settings.max_iter * 2,
                                  tolerance_grad=settings.tol, tolerance_change=0.0,
                                  history_size=10, line_search_fn="strong_wolfe")
    penalty_scale = 1.0 / (2.0 * settings.C * n)

    def objective() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=False)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for batch in batches:
            loss = loss_fn(model(batch), batch["targets"]) * (len(batch["ids"]) / n)
            loss.backward()
            total += loss.detach()
        penalty = penalty_scale * sum((w * w).sum() for w in weights)
        if weights:
            penalty.backward()
        value = total + penalty.detach()
        if not torch.isfinite(value):
            raise TrainingDiverged(f"the L-BFGS objective became {value.item()}; check the "
                                   "inputs or raise train.C")
        return value

    final = float(optimizer.step(objective))
    iterations = int(optimizer.state[params[0]].get("n_iter", 0)) if params else 0
    objective()  # gradients at the solution, for the convergence check
    gradient = max((float(p.grad.abs().max()) for p in params if p.grad is not None),
                   default=0.0)
    optimizer.zero_grad(set_to_none=True)
    model.float()
    dev_out, dev_loss = None, math.nan
    if dev is not None:
        dev_out = predict(model, dev, device, accelerator.autocast)
        dev_loss = loss_fn(dev_out.outputs, dev_out.targets).item()
        if not math.isfinite(dev_loss):
            raise TrainingDiverged(f"dev loss became {dev_loss} after L-BFGS")
    converged = gradient <= settings.tol
    record = {"epoch": 1, "train_loss": final, "lr": 1.0,
              **({"dev_loss": dev_loss} if dev_out is not None else {}),
              "iterations": iterations, "gradient": gradient}
    if on_epoch is not None:
        on_epoch(1, record)
    result = FitResult(best_epoch=1, best_dev_loss=dev_loss, epochs_run=1, steps=iterations,
                       seconds=time.perf_counter() - start, history=[record],
                       dev_outputs=dev_out,
                       stopped_by="converged" if converged else "iteration_limit",
                       epoch_limit=1)
    return result


def _in_double(value: Any) -> Any:
    """``value`` (a batch) with every floating tensor in float64; masks and labels as they are."""
    if isinstance(value, torch.Tensor):
        return value.double() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _in_double(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_in_double(v) for v in value)
    if isinstance(value, Targets):
        return Targets(_in_double(value.labels), _in_double(value.avd))
    return value
