"""Speech encoders trained end to end (``mode: finetune``) and staged (``mode: staged``), with
tiny random wav2vec 2.0 checkpoints built offline."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from emoplug.errors import RecipeError
from emoplug.recipe import load_plan
from emoplug.registry import get_registry
from emoplug.train import audio_stage
from emoplug.train.runner import run_plan

SR = 16000
QUIET = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
         "feat_proj_dropout": 0.0, "final_dropout": 0.0, "mask_time_prob": 0.0}


def tiny_checkpoint(path: Path, **overrides) -> str:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **overrides)
    Wav2Vec2Model(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("w2v"), **QUIET)


def featurizer(**settings):
    return get_registry().build("audio", {"type": "wav2vec", **settings})


def waveforms(*seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch ``[B, S, 1]`` of random waveforms and its mask."""
    rng = np.random.default_rng(0)
    longest = int(max(seconds) * SR)
    batch = torch.zeros(len(seconds), longest, 1)
    mask = torch.zeros(len(seconds), longest, dtype=torch.bool)
    for i, s in enumerate(seconds):
        n = int(s * SR)
        batch[i, :n, 0] = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
        mask[i, :n] = True
    return batch, mask


def train_steps(module, steps: int = 3) -> None:
    """A few AdamW steps of ``module`` under a linear head, through the trainer's groups."""
    from emoplug.train.model import CellModel, parameter_groups

    torch.manual_seed(0)
    head = torch.nn.Linear(module.dim, 4)
    model = CellModel(lambda enc: head(enc["audio"].pooled), audio=module)
    model.head = head
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-2, {"text": 1e-2, "audio": 1e-2},
                                                   0.0))
    batch, mask = waveforms(0.3, 0.2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model({"audio": (batch, mask)}),
                                                 torch.tensor([0, 1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.speech.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module, prefix: str) -> bool:
    after = module.speech.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


# -- the trainable module ------------------------------------------------------------------

def test_fine_tuning_changes_the_speech_model_but_not_its_frozen_front_end(tiny_w2v):
    module = featurizer(pretrained=tiny_w2v, mode="finetune").build_waveform_encoder()
    before = snapshot(module)
    train_steps(module)
    assert changed(before, module, "encoder.layers.")
    assert changed(before, module, "feature_projection.")
    assert not changed(before, module, "feature_extractor.")  # frozen by default


def test_the_front_end_trains_when_unfrozen(tiny_w2v):
    module = featurizer(pretrained=tiny_w2v, mode="finetune",
                        freeze_feature_encoder=False).build_waveform_encoder()
    before = snapshot(module)
    train_steps(module)
    assert changed(before, module, "feature_extractor.")


def test_the_speech_model_trains_at_its_encoder_lr(tiny_w2v):
    from emoplug.train.model import CellModel, parameter_groups

    module = featurizer(pretrained=tiny_w2v, mode="finetune").build_waveform_encoder()
    model = CellModel(torch.nn.Linear(module.dim, 4), audio=module)
    groups = parameter_groups(model, 1e-3, {"text": 2e-5, "audio": 5e-5}, 0.01)
    speech = {id(p) for p in module.speech.parameters() if p.requires_grad}
    rates = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert speech and all(rates[i] == 5e-5 for i in speech)
    assert all(rate == 1e-3 for i, rate in rates.items() if i not in speech)  # head, mixing
    assert not any(id(p) in rates for p in module.speech.feature_extractor.parameters())


def test_gradient_checkpointing_recomputes_the_layers_with_the_same_gradients(tiny_w2v):
    grads, calls = {}, {}
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same head, the same dropout masks
        module = featurizer(pretrained=tiny_w2v, mode="finetune",
                            gradient_checkpointing=checkpointing).build_waveform_encoder()
        count = [0]
        module.speech.encoder.layers[0].feed_forward.register_forward_hook(
            lambda *_, count=count: count.__setitem__(0, count[0] + 1))
        batch, mask = waveforms(0.3, 0.2)
        module.train()
        module(batch, mask).pooled.sum().backward()
        calls[checkpointing] = count[0]
        grads[checkpointing] = module.speech.encoder.layers[0].attention.q_proj.weight.grad
    assert calls == {False: 1, True: 2}  # run again in the backward pass
    torch.testing.assert_close(grads[True], grads[False])


def test_a_padded_batch_gives_each_utterance_what_it_gives_alone(tmp_path):
    """A layer-norm model takes the samples' mask: padding changes no utterance's output."""
    path = tiny_checkpoint(tmp_path / "w2v-ln", feat_extract_norm="layer",
                           do_stable_layer_norm=True, **QUIET)
    module = featurizer(pretrained=path, mode="finetune", layers=[0, 1, 2],
                        downsample=2).build_waveform_encoder().eval()
    batch, mask = waveforms(0.5, 0.25)
    with torch.no_grad():
        together = module(batch, mask)
        short = module(batch[1:, :mask[1].sum()], mask[1:, :mask[1].sum()])
    frames = int(short.mask.sum())
    assert int(together.mask[1].sum()) == frames < together.mask.shape[1]
    torch.testing.assert_close(together.sequence[1, :frames], short.sequence[0], atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(together.pooled[1], short.pooled[0], atol=1e-4, rtol=1e-4)


def test_a_model_without_a_conv_front_end_cannot_be_fine_tuned(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    bert = featurizer(pretrained=str(tmp_path / "bert"), mode="finetune")
    message = (f"mode: finetune trains a wav2vec 2.0-style model (wav2vec 2.0, HuBERT, WavLM, "
               f"data2vec-audio); {tmp_path / 'bert'} is a bert")
    assert [str(p) for p in bert.check()] == [message]  # emoplug validate says so
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
        bert.build_waveform_encoder()
    assert featurizer(pretrained=str(tmp_path / "bert")).check() == []  # frozen: any model


# -- keys ----------------------------------------------------------------------------------

def test_training_settings_leave_the_frozen_cache_key_alone(tiny_w2v):
    key = featurizer(pretrained=tiny_w2v).cache_key()
    assert featurizer(pretrained=tiny_w2v, encoder_lr=1e-4, gradient_checkpointing=True,
                      freeze_feature_encoder=False).cache_key() == key
    assert featurizer(pretrained=tiny_w2v, layers=[1]).cache_key() != key
    assert featurizer(pretrained=tiny_w2v + "-other").cache_key() != key


# -- in a run ------------------------------------------------------------------------------

RECIPE = """
name: speech
dataset: {{type: demo, utterances_per_speaker: 4, min_duration: 0.3, max_duration: 0.6}}
protocol: {{type: kfold, k: 2}}
seeds: [0]
train: {{epochs: 1, batch_size: 8, lr: 3.0e-3}}
audio:
  w2v: {{type: wav2vec, pretrained: {pretrained}, layers: [1, 2], mode: {mode},
         encoder: {{type: attention_pool, hidden: 16}}}}
fusion:
  none: {{type: none, hidden: 16}}
  narrow: {{type: none, hidden: 8}}
grid: {{text: [null], audio: [w2v], fusion: [none], approach: [direct]}}
cache_dir: {cache}
"""
SECOND_CELL = "extra:\n  - {audio: w2v, fusion: narrow, approach: direct}\n"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache folder for the module's runs: the demo corpus is generated once."""
    return tmp_path_factory.mktemp("cache")


def write_recipe(tmp_path: Path, pretrained: str, mode: str, extra: str = "",
                 cache: Path | None = None) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE).format(
        pretrained=pretrained, mode=mode, cache=cache or tmp_path / "cache") + extra)
    return path


def results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("jobs/*/result.json"))]


def test_a_finetune_cell_trains_end_to_end_on_the_demo_corpus(tiny_w2v, tmp_path, cache,
                                                             monkeypatch):
    """Under train.mixed_precision bf16 (CPU autocast here) the speech model runs in bf16."""
    from emoplug.train.model_check import check_run
    from emoplug_audio.speech_model import SpeechModelEncoder

    dtypes = set()
    frames = SpeechModelEncoder.frames

    def recorded(self, waveforms, mask):
        states, frame_mask = frames(self, waveforms, mask)
        dtypes.add(states.dtype)
        return states, frame_mask

    monkeypatch.setattr(SpeechModelEncoder, "frames", recorded)
    plan = load_plan(write_recipe(tmp_path, tiny_w2v, "finetune", cache=cache),
                     ["train.mixed_precision=bf16"])
    summary = run_plan(plan, tmp_path / "out", verbosity=0)
    assert len(summary.done) == 2 and not summary.failed
    assert dtypes == {torch.bfloat16}
    module = featurizer(pretrained=tiny_w2v, mode="finetune").build_waveform_encoder()
    trainable = sum(p.numel() for p in module.speech.parameters() if p.requires_grad)
    for result in results(tmp_path / "out"):
        assert result["audio_mode"] == "finetune" and result["audio_stage"] is None
        assert result["model"]["audio"]["class"] == "SpeechModelEncoder"
        assert result["model"]["audio"]["pretrained_parameters"] == trainable
        assert result["model"]["audio_input_dim"] == 1  # waveforms
        assert result["cohort"] == 1 and 0.0 <= result["metrics"]["test"]["ua"] <= 1.0
        assert result["mixed_precision"] == "bf16"
    config = json.loads(next((tmp_path / "out").glob("jobs/*/config.json")).read_text())
    assert config["audio"]["mode"] == "finetune"
    assert config["audio"]["freeze_feature_encoder"] is True
    assert check_run(tmp_path / "out")["mismatched"] == []
    # the frozen featurizer's cache is neither read nor written
    assert not any(p.name.startswith("wav2vec") for p in cache.iterdir())


def test_staged_speech_encoders_are_fine_tuned_once_per_fold_and_reused(tiny_w2v, tmp_path,
                                                                       cache, monkeypatch):
    runs: list[str] = []
    real = audio_stage.run_audio_stage

    def counted(ctx, audio_config, fold, seed, *args, **kwargs):
        runs.append(fold)
        return real(ctx, audio_config, fold, seed, *args, **kwargs)

    monkeypatch.setattr(audio_stage, "run_audio_stage", counted)
    out = tmp_path / "out"
    assert run_plan(load_plan(write_recipe(tmp_path, tiny_w2v, "staged", cache=cache)), out,
                    verbosity=0).ok
    assert sorted(runs) == ["fold1", "fold2"]
    first = {r["fold"]: r["audio_stage"] for r in results(out)}
    stages = {p.parent.name: json.loads(p.read_text()) for p in out.glob("stages/*/stage.json")}
    assert set(stages) == set(first.values())
    assert all(s["status"] == "done" and s["kind"] == "audio" for s in stages.values())
    weights = {sid: sorted((out / "stages" / sid / "features").rglob("*.npy"))
               for sid in stages}
    # a second fusion cell on the same folds and seed reads the stages: no fine-tuning
    runs.clear()
    summary = run_plan(load_plan(write_recipe(tmp_path, tiny_w2v, "staged", SECOND_CELL,
                                              cache)), out, verbosity=0)
    assert summary.ok and len(summary.done) == 2 and len(summary.skipped) == 2
    assert runs == []
    fused = [r for r in results(out) if r["cell_label"] == "w2v/narrow/direct"]
    assert {r["fold"]: r["audio_stage"] for r in fused} == first
    assert all(r["audio_mode"] == "staged" and r["model"]["audio"]["class"] ==
               "MixedLayersEncoder" for r in fused)
    assert weights == {sid: sorted((out / "stages" / sid / "features").rglob("*.npy"))
                       for sid in stages}
    from emoplug.train.model_check import check_run

    assert check_run(out) == {"checked": 4, "mismatched": []}


def test_a_stage_whose_lease_was_lost_keeps_nothing(tiny_w2v, tmp_path, cache):
    from accelerate import Accelerator

    from emoplug.train.context import RunContext

    plan = load_plan(write_recipe(tmp_path, tiny_w2v, "staged", cache=cache))
    ctx = RunContext(plan, tmp_path / "out")
    config = plan.cells[0].config["audio"]
    info = audio_stage.run_audio_stage(ctx, config, "fold1", 0, Accelerator(),
                                       keep=lambda: False)
    sid = audio_stage.stage_id(ctx, config, "fold1", 0)
    assert info["status"] == "discarded" and info["stage"] == sid
    assert audio_stage.stage_status(ctx, sid) is None
    assert not (audio_stage.stage_path(ctx, sid) / audio_stage.FEATURES).exists()


@pytest.mark.parametrize(("mode", "extractions", "stages", "fine_tuning"),
                         [("frozen", 1, 0, 0), ("finetune", 0, 0, 2), ("staged", 0, 2, 0)])
def test_the_plan_counts_speech_fine_tunings(tiny_w2v, tmp_path, mode, extractions, stages,
                                             fine_tuning):
    size = load_plan(write_recipe(tmp_path, tiny_w2v, mode)).size()
    assert (size["feature_extractions"], size["stage_fine_tunings"],
            size["fine_tuning_jobs"]) == (extractions, stages, fine_tuning)


def test_stage_ids_change_with_model_settings_fold_seed_and_control(tiny_w2v, tmp_path):
    from emoplug.train.context import RunContext

    plan = load_plan(write_recipe(tmp_path, tiny_w2v, "staged"))
    ctx = RunContext(plan, tmp_path / "out")
    config = plan.cells[0].config["audio"]
    base = audio_stage.stage_id(ctx, config, "fold1", 0)
    variants = [{**config, "pretrained": tiny_w2v + "-b"}, {**config, "layers": [2]},
                {**config, "encoder_lr": 1e-4}, {**config, "freeze_feature_encoder": False},
                {**config, "gradient_checkpointing": True},
                {**config, "stage_objective": "category"},
                {**config, "encoder": {**config["encoder"], "hidden": 8}}]
    ids = {audio_stage.stage_id(ctx, v, "fold1", 0) for v in variants}
    ids |= {audio_stage.stage_id(ctx, config, "fold2", 0),
            audio_stage.stage_id(ctx, config, "fold1", 1),
            audio_stage.stage_id(ctx, config, "fold1", 0, "permuted_labels")}
    assert base not in ids and len(ids) == len(variants) + 3
    assert audio_stage.stage_id(ctx, dict(config), "fold1", 0) == base


@pytest.mark.parametrize(("mode", "override", "message"), [
    ("finetune", "train.optimizer=lbfgs",
     "optimizer lbfgs fits full-batch and cannot fine-tune a speech"),
    ("staged", "protocol=inner", "a staged speech encoder is fine-tuned once per fold on its "
                                 "dev split"),
])
def test_recipes_that_cannot_train_the_speech_model_are_refused(tiny_w2v, tmp_path, mode,
                                                                override, message):
    recipe = write_recipe(tmp_path, tiny_w2v, mode)
    if override == "protocol=inner":
        recipe.write_text(recipe.read_text().replace("{type: kfold, k: 2}",
                                                     "{type: loso, dev: inner_folds}"))
        override = "seeds=[0]"
    with pytest.raises(RecipeError, match=message):
        load_plan(recipe, [override])


def test_a_staged_speech_encoders_settings_cannot_be_tuned_per_job(tiny_w2v, tmp_path):
    tune = "tune: {space: {audio.encoder_lr: [1.0e-5, 1.0e-4]}}\n"
    with pytest.raises(RecipeError, match="staged speech encoders are fine-tuned once and "
                                          "shared by cells"):
        load_plan(write_recipe(tmp_path, tiny_w2v, "staged", tune))
    assert load_plan(write_recipe(tmp_path, tiny_w2v, "finetune", tune)).recipe.tune


@pytest.mark.parametrize("mode", ["finetune", "staged"])
def test_a_saved_model_predicts_what_its_job_did(tmp_path, cache, mode):
    """train.save: best keeps the fine-tuned speech model in model/audio/ (not twice; for
    staged, the stage's): the folder predicts the job's test utterances without the original
    checkpoint."""
    import csv
    import shutil

    from safetensors import safe_open

    from emoplug.predict import Row, load_model

    pretrained = tiny_checkpoint(tmp_path / "w2v", **QUIET)
    plan = load_plan(write_recipe(tmp_path, pretrained, mode, cache=cache),
                     ["train.save=best"])
    plan.jobs = plan.jobs[:1]
    assert run_plan(plan, tmp_path / "out", verbosity=0).ok
    job = tmp_path / "out" / "jobs" / plan.jobs[0].id
    shutil.rmtree(pretrained)  # the saved folder must not need it
    assert (job / "model" / "audio" / "config.json").is_file()
    with safe_open(str(job / "model" / "model.safetensors"), "pt") as weights:
        assert not any(k.startswith("audio.speech.") for k in weights.keys())
        assert any(k.startswith("audio.head." if mode == "finetune" else "audio.mix.")
                   for k in weights.keys())
    if mode == "staged":  # the stage kept its speech model for the saved models
        (stage,) = (tmp_path / "out" / "stages").iterdir()
        assert (stage / "encoder" / "model.safetensors").is_file()
    expected = list(csv.DictReader(open(job / "predictions.csv")))
    from emoplug.data.loading import load_corpus_and_folds

    corpus = load_corpus_and_folds(plan.corpus_request())[0].by_id()
    predictor = load_model(job / "model", device="cpu")
    predicted, bad = predictor.predict_many([Row(r["id"], corpus[r["id"]].audio, None)
                                             for r in expected])
    assert not bad and len(predicted) == len(expected)
    for row, (_, pred) in zip(expected, predicted, strict=True):
        assert pred["category"] == row["predicted"]
        for label, p in pred["probabilities"].items():
            assert p == pytest.approx(float(row[f"p_{label}"]), abs=1e-5)


def test_waveforms_are_prepared_read_once_and_packed_like_features(tiny_w2v, tmp_path, cache):
    from emoplug.data.audio import load_audio
    from emoplug.train.context import RunContext
    from emoplug.train.data import pad_arrays

    plan = load_plan(write_recipe(tmp_path, tiny_w2v, "finetune", cache=cache))
    ctx = RunContext(plan, tmp_path / "out")
    config = plan.cells[0].config["audio"]
    store = ctx.waveforms(config)
    assert ctx.waveforms({**config, "encoder_lr": 1e-4}) is store  # training keys: same input
    utterances = [u for u in ctx.corpus.utterances if u.audio][:3]
    featurizer = get_registry().build("audio", config)
    for utt in utterances:
        y = load_audio(utt.audio, SR)
        expected = ((y - y.mean()) / np.sqrt(y.var() + 1e-7)).astype(np.float32)[:, None]
        np.testing.assert_allclose(store.loader(utt)(), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(featurizer.prepare_waveform(y)[:, None], expected)
        assert store.frames[utt.id] == len(y)
    ids = [u.id for u in utterances]
    packed, mask = store.packed(utterances, torch.device("cpu")).pad(ids)
    host, host_mask = pad_arrays([store.loader(u)() for u in utterances])
    torch.testing.assert_close(packed, host)
    assert torch.equal(mask, host_mask)
    assert not any(p.name.startswith("wav2vec") for p in cache.iterdir())  # nothing cached


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["finetune", "staged"])
def test_ddp_trains_the_speech_model_across_both_processes(tiny_w2v, tmp_path, cache, mode):
    """train.strategy: ddp: both processes train each job's (or each stage's) speech model
    together; the main process writes."""
    import os
    import subprocess
    import sys

    recipe = write_recipe(tmp_path, tiny_w2v, mode, cache=cache)
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
         "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "emoplug", "run", str(recipe), "--output", str(out), "-q",
         "train.strategy=ddp"],
        capture_output=True, text=True, timeout=400,
        env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = results(out)
    assert len(found) == 2 and all(r["status"] == "done" for r in found)
    assert {r["process"]["count"] for r in found} == {2}
    assert {r["audio_mode"] for r in found} == {mode}
    stages = list(out.glob("stages/*/stage.json"))
    assert len(stages) == (2 if mode == "staged" else 0)


def test_the_ray_executor_refuses_speech_encoders_that_train(tiny_w2v, tmp_path, cache):
    """Speech stages are not Ray units yet: refused in one line before anything is written."""
    from emoplug.errors import EmoplugError
    from emoplug.train.runner import run_plan

    recipe = write_recipe(tmp_path, tiny_w2v, "finetune")
    with pytest.raises(EmoplugError, match=r"--executor ray does not run speech encoders that "
                                           r"train \(audio w2v: mode finetune or staged\)"):
        run_plan(load_plan(recipe), tmp_path / "out", verbosity=-1, executor="ray")
    assert not (tmp_path / "out").exists()
