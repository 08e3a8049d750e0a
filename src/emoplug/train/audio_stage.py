"""Speech encoders fine-tuned once per (featurizer config, fold, seed) and shared by cells.

A ``staged`` speech featurizer (``mode: staged``, e.g. ``wav2vec``) is fine-tuned end to end
from waveforms on the fold's training set with a speech-only head trained on the config's
``stage_objective`` (as text stages: ``multitask``, ``category`` or ``avd``), early-stopped on
dev. Its features (the frames its encoder reads, ``[frames, dim]`` float16, one utterance at a
time, unpadded: what the frozen featurizer would give with the fine-tuned weights) are saved
for every utterance of the fold under ``<run>/stages/<id>/features/`` (a feature cache keyed
by the audio file's content), with ``train.save: best`` its fine-tuned model under
``encoder/``, then ``stage.json``; every fusion/approach cell of that fold and
seed trains its audio encoder on them. A learning control gets stages of its own.

The runner may run stages before their jobs (:func:`run_audio_stage`, like text stages);
otherwise the first job that needs one runs it (:func:`settle_stage`), under a lease on the
unit ``stage-<id>`` so that processes sharing the run folder fine-tune it once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emoplug.data.cache import FeatureCache, file_digest
from emoplug.errors import EmoplugError
from emoplug.files import atomic_folder, read_json, write_json_atomic
from emoplug.recipe import Job, audio_mode, stable_hash
from emoplug.train.context import FeatureStore, RunContext
from emoplug.train.controls import apply_control
from emoplug.train.data import Collator, Example, Loader, move_to
from emoplug.train.loop import OnBatch, fit
from emoplug.train.model import CellModel
from emoplug.train.text_stage import PooledHead, stage_loss
from emoplug.types import Utterance

#: folder of a stage holding its features, and their namespace in that feature cache
FEATURES = "features"
#: folder of a stage holding its fine-tuned speech model (written when ``train.save: best``)
STAGE_ENCODER = "encoder"
NAMESPACE = "outputs"
#: seconds between looks at a stage another process fine-tunes
POLL_SECONDS = 2.0


def stage_id(ctx: RunContext, audio_config: dict[str, Any], fold: str, seed: int,
             control: str | None = None) -> str:
    """The id of the stage fine-tuning ``audio_config`` on ``fold`` with ``seed`` (and the
    learning ``control``, part of the id only when there is one)."""
    payload = {**ctx.plan.shared_config, "audio": audio_config, "fold": fold, "seed": seed,
               "stage": "audio"}
    if control is not None:
        payload["control"] = control
    return stable_hash(payload)


def job_stage_id(ctx: RunContext, job: Job) -> str | None:
    """The id of the speech stage whose features ``job`` trains on; None when its audio is
    not staged."""
    audio = job.cell.config["audio"]
    if audio_mode(audio) != "staged":
        return None
    return stage_id(ctx, audio, job.fold, job.seed, job.cell.control)


def stage_path(ctx: RunContext, sid: str) -> Path:
    return ctx.output_dir / "stages" / sid


def stage_status(ctx: RunContext, sid: str) -> dict[str, Any] | None:
    """``stage.json`` of a stage, or None when it has not run. With ``train.save: best``, a
    stage that finished without keeping its speech model counts as not run (it runs again)."""
    status = read_json(stage_path(ctx, sid) / "stage.json")
    if not isinstance(status, dict):
        return None
    if (ctx.plan.recipe.train.save == "best" and status.get("status") == "done"
            and not (stage_path(ctx, sid) / STAGE_ENCODER).is_dir()):
        return None
    return status


def _examples(ctx: RunContext, store: FeatureStore, ids: tuple[str, ...]) -> list[Example]:
    """The utterances of ``ids`` with readable audio, as waveform examples."""
    out = []
    for utt_id in ids:
        u = ctx.by_id[utt_id]
        if u.audio and store.available(u):
            label = ctx.labels.index(u.label) if u.label in ctx.labels else -1
            out.append(Example(u.id, label, u.avd or (np.nan,) * 3, audio=store.loader(u),
                               frames=store.frames[u.id]))
    return out


def run_audio_stage(ctx: RunContext, audio_config: dict[str, Any], fold_name: str, seed: int,
                    accelerator: Any, ddp: bool = False, control: str | None = None,
                    on_batch: OnBatch | None = None,
                    keep: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Fine-tune the speech model on the fold's training set (its targets permuted under the
    ``permuted_labels`` control) and save its features for the fold's utterances (under
    ``ddp`` every process trains it, the main process saves). ``keep()`` is asked just before
    saving: False (the stage's lease was lost) saves nothing; the info says ``discarded``."""
    start = time.perf_counter()
    settings = ctx.plan.recipe.train
    fold = ctx.folds[fold_name]
    store = ctx.waveforms(audio_config)
    train = apply_control(control, _examples(ctx, store, fold.train), seed, fold_name)
    dev = _examples(ctx, store, fold.dev)
    objective = audio_config["stage_objective"]
    sid = stage_id(ctx, audio_config, fold_name, seed, control)
    where = f"speech stage {audio_config['type']} fold={fold_name}"
    if not train or not dev:
        raise EmoplugError(f"{where}: the {'train' if not train else 'dev'} split has no "
                           "utterance with readable audio")
    loss = stage_loss(objective, len(ctx.labels), train, where)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # the speech model's time masking draws from NumPy
    module = ctx.registry.build("audio", audio_config).build_waveform_encoder()
    model = CellModel(PooledHead(module.dim, loss.out_dim, "audio"), audio=module)
    collate = Collator(None)
    result = fit(model, loss,
                 Loader(train, collate, settings.batch_size, True, seed, settings.bucketing),
                 Loader(dev, collate, settings.batch_size, False), settings, accelerator,
                 encoder_lr={"audio": audio_config.get("encoder_lr")}, ddp=ddp,
                 epochs=settings.stage_epochs, on_batch=on_batch)
    info = {"status": "done", "stage": sid, "kind": "audio", "audio": audio_config,
            "fold": fold_name, "seed": seed, "objective": objective, "control": control,
            "head_outputs": loss.out_dim, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "dev_loss": result.best_dev_loss,
            "train_s": result.seconds, "pretrained_parameters": sum(
                p.numel() for p in module.pretrained_parameters() if p.requires_grad)}
    if accelerator.is_main_process or not ddp:
        utterances = [ctx.by_id[i] for i in (*fold.train, *fold.dev, *fold.test)]
        try:
            with atomic_folder(stage_path(ctx, sid) / FEATURES) as tmp:
                info["utterances"] = save_features(module, store, utterances,
                                                   FeatureCache(tmp), accelerator.device)
                info["total_s"] = time.perf_counter() - start
                if keep is not None and not keep():
                    raise _Discarded  # leaves the folder as it was
        except _Discarded:
            return {**info, "status": "discarded"}
        if settings.save == "best":  # saved models of staged cells need the speech model
            with atomic_folder(stage_path(ctx, sid) / STAGE_ENCODER) as tmp:
                ctx.registry.build("audio", audio_config).save_waveform_encoder(module, tmp)
        write_json_atomic(stage_path(ctx, sid) / "stage.json", info)
    return info


class _Discarded(Exception):
    """The stage's lease was lost before its features were kept."""


def save_features(module: nn.Module, store: FeatureStore, utterances: list[Utterance],
                  cache: FeatureCache, device: torch.device) -> int:
    """Write the features the fine-tuned ``module`` gives each utterance with readable audio
    (alone, unpadded) into ``cache``; returns how many."""
    module.eval().to(device)
    written = 0
    with torch.no_grad():
        for utt in utterances:
            if not utt.audio or not store.available(utt):
                continue
            waveform = torch.from_numpy(store.loader(utt)())[None]
            batch = move_to({"w": (waveform, torch.ones(waveform.shape[:2], dtype=torch.bool))},
                            device)["w"]
            frames, mask = module.frames(*batch)
            cache.put(NAMESPACE, file_digest(utt.audio),
                      frames[0][mask[0]].float().cpu().numpy().astype(np.float16))
            written += 1
    return written


class StageFeatures(FeatureStore):
    """The features a speech stage saved, read per utterance from its folder (kept in memory
    while the budget allows)."""

    def read(self, utt: Utterance) -> np.ndarray:
        if not utt.audio:
            raise EmoplugError(f"utterance {utt.id} has no audio file")
        array = self.cache.get(NAMESPACE, file_digest(utt.audio))
        if array is None:
            raise EmoplugError(f"the speech stage in {self.cache.root} has no features of "
                               f"{utt.id}")
        return array


def stage_features(ctx: RunContext, sid: str) -> FeatureStore:
    """The store of a finished stage's features (one stage's kept in memory at a time: jobs
    run grouped by stage)."""
    status = stage_status(ctx, sid)
    if status is None:
        raise EmoplugError(f"speech stage {sid} has not run (stages/{sid}/stage.json)")
    if status.get("status") != "done":
        raise EmoplugError(f"speech stage failed: {status.get('error', 'unknown error')}")
    featurizer = ctx.registry.build("audio", status["audio"])
    return ctx.exclusive_store(
        f"audio-stage-{sid}", "audio-stage-",
        lambda budget: StageFeatures(featurizer, FeatureCache(stage_path(ctx, sid) / FEATURES),
                                     budget))


def settle_stage(ctx: RunContext, job: Job, accelerator: Any, ddp: bool = False,
                 on_batch: OnBatch | None = None) -> dict[str, Any] | None:
    """Make sure the speech stage ``job`` reads has run: when it has not, fine-tune it here
    under a lease on ``stage-<id>`` (waiting while another process holds it, taking over a
    stale one). Returns its ``stage.json`` (None for a job without a staged speech encoder).
    A failure raises (the job fails with it; the stage is tried again by the next job)."""
    from emoplug.train.leases import Leases, new_token

    sid = job_stage_id(ctx, job)
    if sid is None:
        return None
    leases = Leases(ctx.output_dir, new_token(), ctx.rank, enabled=not ddp)
    unit = f"stage-{sid}"
    try:
        while (status := stage_status(ctx, sid)) is None:
            if not leases.take(unit):
                time.sleep(POLL_SECONDS)
                continue
            if stage_status(ctx, sid) is None:  # finished between the look and the lease
                leases.note("start", unit)
                info = run_audio_stage(ctx, job.cell.config["audio"], job.fold, job.seed,
                                       accelerator, ddp=ddp, control=job.cell.control,
                                       on_batch=on_batch, keep=lambda: leases.owns(unit))
                if info["status"] == "discarded":  # another process took it over: wait
                    leases.note("discard", unit)
                else:
                    leases.note("end", unit, result=info["status"])
                    if ddp:
                        accelerator.wait_for_everyone()  # the main process has saved it
                    if stage_status(ctx, sid) is None:
                        raise EmoplugError(f"speech stage {sid} ran but wrote no "
                                           f"stages/{sid}/stage.json")
            leases.release(unit)
    finally:
        leases.release_all()
    return status
