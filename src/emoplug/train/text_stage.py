"""Text encoder outputs computed once and shared by many cells.

- ``frozen``: the pretrained encoder's outputs, cached per (encoder config, text) in the
  feature cache; every cell, fold and seed reuses them.
- ``staged``: per (encoder config, fold, seed) the encoder is fine-tuned once with a text-only
  head trained on the config's ``stage_objective`` (``multitask``: categories + standardised
  valence/arousal/dominance when the corpus has them; ``category``; ``avd``), early-stopped on
  dev; its outputs for every utterance of the fold are saved under ``<run>/stages/<id>/`` and
  every fusion/approach cell of that fold and seed trains on them. A learning control
  (``controls.py``) gets stages of its own, fine-tuned on its permuted training targets.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emoplug.components import recipe_key
from emoplug.data.cache import text_digest
from emoplug.errors import EmoplugError
from emoplug.files import atomic_folder, honour_umask, write_json_atomic
from emoplug.recipe import Job, stable_hash
from emoplug.train.context import RunContext
from emoplug.train.controls import apply_control
from emoplug.train.data import Collator, Example, Loader, eval_batches, move_to
from emoplug.train.loop import OnBatch, fit
from emoplug.train.model import CellModel
from emoplug.types import Encoded, Targets

TextOutputs = dict[str, tuple[np.ndarray, np.ndarray]]
#: folder of a stage holding its fine-tuned encoder (written when ``train.save: best``)
STAGE_ENCODER = "encoder"


def build_text_module(ctx: RunContext, text_config: dict[str, Any], seed: int) -> nn.Module:
    """Build a text encoder module; random parts (tiny models, dropout) follow ``seed``.
    Tiny encoders train their tokenizer on the transcripts the config reads."""
    with recipe_key(ctx.plan.component_key("text", text_config)):
        texts = sorted({t for t in ctx.transcripts(text_config).values() if t})
        torch.manual_seed(seed)
        component = ctx.registry.build("text", text_config)
        return component.build(texts=texts, work_dir=ctx.work_dir())


def encode_texts(module: nn.Module, texts: dict[str, str], batch_size: int,
                 device: torch.device, progress: str | None = None) -> TextOutputs:
    """``{id: (sequence [T, H] float16 without padding, pooled [H] float16)}``; with
    ``progress``, a bar of that name counts the texts."""
    module.eval().to(device)
    ids = list(texts)
    out: TextOutputs = {}
    bar = None
    if progress is not None:
        from tqdm import tqdm

        bar = tqdm(total=len(ids), desc=progress, unit="text", leave=False, dynamic_ncols=True)
    with torch.no_grad():
        for batch in eval_batches([len(texts[i]) for i in ids], batch_size):
            if bar is not None:
                bar.update(len(batch))
            chosen = [ids[i] for i in batch]
            tokens = move_to({"t": module.tokenize([texts[i] for i in chosen])}, device)["t"]
            encoded: Encoded = module(**tokens)
            for row, utt_id in enumerate(chosen):
                mask = encoded.mask[row].bool()
                out[utt_id] = (encoded.sequence[row][mask].half().cpu().numpy(),
                               encoded.pooled[row].half().cpu().numpy())
    if bar is not None:
        bar.close()
    return out


def frozen_outputs(ctx: RunContext, text_config: dict[str, Any], device: torch.device
                   ) -> TextOutputs:
    """Outputs of a frozen encoder for every utterance with a transcript (of the config's
    ``source``), through the feature cache."""
    key = frozen_key(ctx, text_config)
    if key in ctx.text_outputs:
        return ctx.text_outputs[key]
    texts = ctx.transcripts(text_config)
    outputs: TextOutputs = {}
    missing: dict[str, str] = {}
    for utt_id, text in texts.items():
        seq = ctx.cache.get(f"text-{key}-seq", text_digest(text))
        pooled = ctx.cache.get(f"text-{key}-pooled", text_digest(text))
        if seq is None or pooled is None:
            missing[utt_id] = text
        else:
            outputs[utt_id] = (seq, pooled)
    if missing:
        module = build_text_module(ctx, text_config, seed=0)
        fresh = encode_texts(module, missing, ctx.plan.recipe.train.batch_size, device,
                             f"frozen {text_config['type']}" if ctx.show_progress else None)
        for utt_id, (seq, pooled) in fresh.items():
            ctx.cache.put(f"text-{key}-seq", text_digest(missing[utt_id]), seq)
            ctx.cache.put(f"text-{key}-pooled", text_digest(missing[utt_id]), pooled)
        outputs.update(fresh)
    ctx.text_outputs[key] = outputs
    return outputs


def frozen_key(ctx: RunContext, text_config: dict[str, Any]) -> str:
    """Where a frozen encoder's outputs are kept in ``ctx.text_outputs`` and the cache."""
    # the dataset is part of the key: tiny encoders train their tokenizer on its texts
    return "frozen-" + stable_hash([text_config, ctx.plan.data_identity()], 20)


def stage_key(sid: str) -> str:
    """Where a stage's outputs are kept in ``ctx.text_outputs``."""
    return f"stage-{sid}"


def stage_id(ctx: RunContext, text_config: dict[str, Any], fold: str, seed: int,
             control: str | None = None) -> str:
    """The id of the stage fine-tuning ``text_config`` on ``fold`` with ``seed`` (and the
    learning ``control``, which is part of the id only when there is one)."""
    payload = {**ctx.plan.shared_config, "text": text_config, "fold": fold, "seed": seed,
               "stage": "text"}
    if control is not None:
        payload["control"] = control
    return stable_hash(payload)


def job_stage_id(ctx: RunContext, job: Job) -> str | None:
    """The id of the stage whose outputs ``job`` trains on; None when its text is not staged."""
    text = job.cell.config["text"]
    if text is None or text.get("mode") != "staged":
        return None
    return stage_id(ctx, text, job.fold, job.seed, job.cell.control)


def stage_path(ctx: RunContext, sid: str) -> Path:
    return ctx.output_dir / "stages" / sid


def stage_status(ctx: RunContext, sid: str) -> dict[str, Any] | None:
    """``stage.json`` of a stage, or None when it has not run. With ``train.save: best``, a
    stage that finished without keeping its encoder counts as not run (it runs again)."""
    try:
        status = json.loads((stage_path(ctx, sid) / "stage.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if (ctx.plan.recipe.train.save == "best" and status.get("status") == "done"
            and not (stage_path(ctx, sid) / STAGE_ENCODER).is_dir()):
        return None
    return status


class PooledHead(nn.Module):
    """Head of a staged fine-tuning (text or speech): the ``modality``'s pooled vector ->
    classes (+ 3 AVD)."""

    def __init__(self, dim: int, out_dim: int, modality: str = "text", dropout: float = 0.1):
        super().__init__()
        self.modality = modality
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, out_dim))

    def forward(self, encoded: dict[str, Encoded]) -> torch.Tensor:
        return self.net(encoded[self.modality].pooled)


class _StageLoss:
    """Cross-entropy on categories (``n_classes`` > 0) plus MSE on standardised AVD (with
    ``avd_mean``), in that order of the outputs; rows without a target are masked."""

    def __init__(self, n_classes: int, avd_mean: torch.Tensor | None,
                 avd_std: torch.Tensor | None):
        self.n_classes, self.mean, self.std = n_classes, avd_mean, avd_std

    @property
    def out_dim(self) -> int:
        """The head's output size: the classes, then 3 AVD outputs when AVD is a target."""
        return self.n_classes + (3 if self.mean is not None else 0)

    def __call__(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        # masks applied arithmetically: no step waits for the GPU to count the known rows
        terms = []
        if self.n_classes:
            labels = targets.labels.to(outputs.device)
            known = (labels >= 0).to(outputs.dtype)
            terms.append(_masked_mean(nn.functional.cross_entropy(
                outputs[:, : self.n_classes], labels.clamp(min=0), reduction="none"), known))
        if self.mean is not None:
            gold = (targets.avd.to(outputs.device) - self.mean.to(outputs.device)) \
                / self.std.to(outputs.device)
            ok = torch.isfinite(gold).to(outputs.dtype)
            terms.append(_masked_mean((outputs[:, self.n_classes:] - gold.nan_to_num()) ** 2,
                                      ok))
        return sum(terms[1:], terms[0])


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; 0 (with zero gradients) where it is all 0."""
    count = mask.sum()
    return (values * mask).sum() / torch.where(count > 0, count, torch.ones_like(count))


def stage_loss(objective: str, n_classes: int, train: list[Example], where: str) -> _StageLoss:
    """The staged head's loss for ``objective`` (``multitask``, ``category``, ``avd``), with
    AVD standardised by the statistics of ``train``; ``where`` names the stage in errors."""
    train_avd = torch.tensor([e.avd for e in train], dtype=torch.float32)
    has_avd = bool(torch.isfinite(train_avd).all(dim=1).any())
    if objective == "avd" and not has_avd:
        raise EmoplugError(f"{where}: stage_objective 'avd' needs valence/arousal/dominance "
                           "targets, and the training fold has none (use 'category')")
    use_avd = has_avd and objective in ("multitask", "avd")
    mean = torch.nanmean(train_avd, dim=0) if use_avd else None
    std = (torch.from_numpy(np.nanstd(train_avd.numpy(), axis=0)).clamp_min(1e-6)
           if use_avd else None)
    return _StageLoss(0 if objective == "avd" else n_classes, mean, std)


def run_text_stage(ctx: RunContext, text_config: dict[str, Any], fold_name: str, seed: int,
                   accelerator: Any, ddp: bool = False,
                   control: str | None = None, on_batch: OnBatch | None = None,
                   keep: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Fine-tune the encoder on the fold's training set (its targets permuted under the
    ``permuted_labels`` control) and save its outputs for the fold (under ``ddp`` all
    processes train it together and the main process saves). ``keep()`` is asked just
    before saving: False (this process lost the stage's lease) saves nothing and returns
    the info with ``status: discarded``."""
    start = time.perf_counter()
    settings = ctx.plan.recipe.train
    fold = ctx.folds[fold_name]
    transcripts = ctx.transcripts(text_config)

    def examples(ids: tuple[str, ...]) -> list[Example]:
        out = []
        for utt_id in ids:
            u = ctx.by_id[utt_id]
            if utt_id in transcripts:
                label = ctx.labels.index(u.label) if u.label in ctx.labels else -1
                out.append(Example(u.id, label, u.avd or (np.nan,) * 3,
                                   text=transcripts[utt_id]))
        return out

    train = apply_control(control, examples(fold.train), seed, fold_name)
    dev = examples(fold.dev)
    objective = text_config["stage_objective"]
    sid = stage_id(ctx, text_config, fold_name, seed, control)
    loss = stage_loss(objective, len(ctx.labels), train,
                      f"text stage {text_config['type']} fold={fold_name}")
    module = build_text_module(ctx, text_config, seed)
    model = CellModel(PooledHead(module.dim, loss.out_dim), text=module)
    collate = Collator(module.tokenize)
    result = fit(model, loss,
                 Loader(train, collate, settings.batch_size, True, seed, settings.bucketing),
                 Loader(dev, collate, settings.batch_size, False), settings, accelerator,
                 encoder_lr={"text": text_config.get("lr")}, ddp=ddp, epochs=settings.stage_epochs,
                 on_batch=on_batch)
    texts = {i: transcripts[i] for i in (*fold.train, *fold.dev, *fold.test)
             if i in transcripts}
    outputs = encode_texts(module, texts, settings.batch_size, accelerator.device)
    info = {"status": "done", "stage": sid, "text": text_config, "fold": fold_name,
            "seed": seed, "objective": objective, "control": control,
            "head_outputs": loss.out_dim, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "dev_loss": result.best_dev_loss,
            "train_s": result.seconds, "total_s": time.perf_counter() - start,
            "utterances": len(outputs)}
    if keep is not None and not keep():
        return {**info, "status": "discarded"}
    if accelerator.is_main_process or not ddp:
        if settings.save == "best":  # saved models of staged cells need the encoder
            save_text_encoder(ctx.registry.build("text", text_config), module,
                              stage_path(ctx, sid) / STAGE_ENCODER)
        save_stage(stage_path(ctx, sid), outputs, info)
    return info


def save_text_encoder(component: Any, module: Any, folder: Path) -> None:
    """Write a text encoder module with its component's ``save`` into ``folder``, whole or
    not at all (written in a temporary sibling, then renamed)."""
    with atomic_folder(folder) as tmp:
        component.save(module, tmp)


def save_stage(path: Path, outputs: TextOutputs, info: dict[str, Any]) -> None:
    """Write ``outputs.npz`` atomically, then ``stage.json`` (its presence marks completion)."""
    path.mkdir(parents=True, exist_ok=True)
    ids = sorted(outputs)
    lengths = np.array([outputs[i][0].shape[0] for i in ids], dtype=np.int64)
    arrays = {
        "ids": np.array(ids),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]),
        "sequence": np.concatenate([outputs[i][0] for i in ids]),
        "pooled": np.stack([outputs[i][1] for i in ids]),
    }
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".tmp-", suffix=".npz")
    try:
        honour_umask(fd)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path / "outputs.npz")
    except BaseException:  # a full disk leaves no half-written file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    write_json_atomic(path / "stage.json", info)


def load_stage(ctx: RunContext, sid: str) -> TextOutputs:
    """The saved outputs of a finished stage (the most recent one is kept in memory)."""
    key = stage_key(sid)
    if key not in ctx.text_outputs:
        for other in [k for k in ctx.text_outputs if k.startswith(stage_key(""))]:
            del ctx.text_outputs[other]  # jobs run grouped by stage: keep one in memory
        with np.load(stage_path(ctx, sid) / "outputs.npz", allow_pickle=False) as data:
            offsets, seq, pooled = data["offsets"], data["sequence"], data["pooled"]
            ctx.text_outputs[key] = {
                str(utt_id): (seq[offsets[i]:offsets[i + 1]], pooled[i])
                for i, utt_id in enumerate(data["ids"])}
    return ctx.text_outputs[key]
