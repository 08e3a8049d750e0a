"""The runner end to end on a tiny demo corpus: outputs, resume after SIGKILL, failures,
NaN losses, and two-process launches (job sharding and DDP)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emoplug import Fusion, hookimpl
from emoplug.recipe import load_plan
from emoplug.registry import get_registry
from emoplug.train.runner import run_plan

RECIPE = """
name: tiny
dataset: {type: demo, utterances_per_speaker: 6}
protocol: {type: loso}
seeds: [0]
train: {epochs: 2, batch_size: 16, lr: 3.0e-3, patience: 1}
text:
  bert: {type: bert, tiny: true, mode: staged, lr: 1.0e-3}
audio:
  mfcc: {type: mfcc, n_mfcc: 13, hop_ms: 20, encoder: {hidden: 16, stride: 2}}
fusion:
  early: {type: early, hidden: 16}
  attention: {type: attention, dim: 16, heads: 2, hidden: 16}
  none: {type: none, hidden: 16}
grid: {text: [bert], audio: [mfcc, null], fusion: [early, attention], approach: [direct]}
"""


def write_recipe(tmp_path: Path, text: str = RECIPE, **extra: str) -> Path:
    path = tmp_path / "r.yaml"
    body = textwrap.dedent(text) + f"cache_dir: {tmp_path / 'cache'}\n"
    for key, value in extra.items():
        body += f"{key}: {value}\n"
    path.write_text(body)
    return path


def results(run: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in run.glob("jobs/*/result.json")}


def emoplug(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emoplug", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kwargs)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One uninterrupted run of the tiny recipe, shared by several tests."""
    tmp = tmp_path_factory.mktemp("run")
    recipe = write_recipe(tmp)
    summary = run_plan(load_plan(recipe), tmp / "out", verbosity=0)
    return recipe, tmp / "out", summary


def test_run_writes_every_job_folder(finished_run):
    recipe, out, summary = finished_run
    plan = load_plan(recipe)
    assert len(summary.done) == len(plan.jobs) == 3 * 5 and not summary.failed
    assert summary.stages == 5  # bert fine-tuned once per fold, shared by its cells
    for job in plan.jobs:
        folder = out / "jobs" / job.id
        config = json.loads((folder / "config.json").read_text())
        assert config["fold"] == job.fold and config["fusion"]["type"] == job.cell.config[
            "fusion"]["type"]
        result = json.loads((folder / "result.json").read_text())
        assert result["status"] == "done" and result["text_mode"] == "staged"
        test = result["metrics"]["test"]
        assert 0.0 <= test["ua"] <= 1.0 and len(test["confusion"]) == 4
        with open(folder / "predictions.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == result["sizes"]["test"] == test["n"]
        assert {"id", "gold", "predicted", "p_neutral", "gold_valence"} <= set(rows[0])
        events = list((folder / "tb").glob("events.out.tfevents.*"))
        assert len(events) == 1  # curves, hparams and test metrics in one file
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "jobs" / plan.jobs[0].id / "tb"))
    events.Reload()
    assert {"loss/train", "loss/dev", "lr", "test/ua", "test/wa"} <= set(
        events.Tags()["scalars"])
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")


def test_leakage_audit_reaches_plan_and_results(finished_run):
    recipe, out, _ = finished_run
    plan = json.loads((out / "plan.json").read_text())
    assert set(plan["audit"]) == set(plan["folds"])
    for audit in plan["audit"].values():
        assert audit["train"]["speaker"] == audit["train"]["session"] == 0  # LOSO
        assert audit["test"] > 0 and audit["train"]["dialog"] == 0
    job = next(iter(results(out).values()))
    assert job["audit"] == plan["audit"][job["fold"]]


def test_rerun_skips_finished_jobs(finished_run):
    recipe, out, _ = finished_run
    summary = run_plan(load_plan(recipe), out, verbosity=0)
    assert summary.done == [] and len(summary.skipped) == 15
    # a run that reads no corpus keeps the audit plan.json had
    assert json.loads((out / "plan.json").read_text())["audit"]


def test_resume_after_sigkill_matches_uninterrupted_run(finished_run, tmp_path):
    recipe, reference, _ = finished_run
    out = tmp_path / "killed"
    shutil.copytree(reference.parent / "cache", tmp_path / "cache", dirs_exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "emoplug", "run", str(recipe), "--output",
                             str(out), "-q"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("jobs/*/result.json"))) < 4:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = results(out)
    assert 0 < len(before) < 15, "the kill should land mid-grid"
    rerun = emoplug("run", str(recipe), "--output", str(out), "-q")
    assert rerun.returncode == 0, rerun.stderr
    after, expected = results(out), results(reference)
    assert set(after) == set(expected)
    for job_id, result in after.items():
        assert result["metrics"]["test"]["ua"] == pytest.approx(
            expected[job_id]["metrics"]["test"]["ua"], abs=1e-9)
        assert result["best_epoch"] == expected[job_id]["best_epoch"]
    for job_id, result in before.items():  # finished before the kill: kept, not re-run
        assert after[job_id]["timings"] == result["timings"]


class _Broken:
    class Exploding(Fusion):
        name = "exploding"

        def build(self, input_dims, out_dim):
            raise RuntimeError("this fusion always fails")

    class Diverging(Fusion):
        name = "diverging"

        def build(self, input_dims, out_dim):
            import torch

            class Nan(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.w = torch.nn.Parameter(torch.ones(1))

                def forward(self, encoded):
                    pooled = next(iter(encoded.values())).pooled
                    return pooled.new_full((pooled.shape[0], out_dim), float("nan")) * self.w
            return Nan()

    @hookimpl
    def emoplug_register_fusions(self, register):
        register(self.Exploding)
        register(self.Diverging)


def test_failing_cells_are_recorded_and_the_grid_goes_on(tmp_path):
    get_registry().add_plugin(_Broken(), "broken")
    recipe = write_recipe(tmp_path, RECIPE.replace("fusion: [early, attention]",
                                                   "fusion: [early, exploding, diverging]")
                          .replace("audio: [mfcc, null]", "audio: [mfcc]"),
                          )
    summary = run_plan(load_plan(recipe, ["seeds=[0]"]), tmp_path / "out", verbosity=0)
    found = results(tmp_path / "out")
    assert len(summary.done) == 5 and len(summary.failed) == 10
    errors = {r["cell_label"]: r["error"] for r in found.values() if r["status"] == "failed"}
    assert errors["bert+mfcc/exploding/direct"] == "RuntimeError: this fusion always fails"
    assert errors["bert+mfcc/diverging/direct"].startswith("TrainingDiverged: loss became nan")
    assert all("Traceback" in r["traceback"] for r in found.values() if r["status"] == "failed")
    # the three cells of a fold trained as one cohort: its failures did not stop the third
    assert {r["cohort"] for r in found.values() if r["status"] == "done"} == {3}


def test_cli_run_exit_codes(tmp_path):
    missing = emoplug("run", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    bad_root = write_recipe(tmp_path, RECIPE.replace("{type: demo, utterances_per_speaker: 6}",
                                                     f"{{type: iemocap, root: {tmp_path}}}"))
    result = emoplug("run", str(bad_root))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    bad_env = emoplug("run", str(write_recipe(tmp_path)), "--output", str(tmp_path / "o"),
                      "--workers", "2", env={"EMOPLUG_DEVICE_INPUTS": "maybe"})
    assert bad_env.returncode == 2 and not (tmp_path / "o" / "jobs").exists()
    assert bad_env.stderr.strip() == ("error: EMOPLUG_DEVICE_INPUTS='maybe' is not one of "
                                      "auto, on, off")


def _launch(recipe: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
         "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "emoplug", "run", str(recipe), "--output", str(out), "-q", *overrides],
        capture_output=True, text=True, timeout=400,
        env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_processes_share_the_jobs_without_overlap(finished_run, tmp_path):
    recipe, reference, _ = finished_run
    out = tmp_path / "sharded"
    proc = _launch(recipe, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = results(out)
    assert set(found) == set(results(reference))
    ranks = {r["process"]["index"] for r in found.values()}
    assert ranks == {0, 1} and {r["process"]["count"] for r in found.values()} == {2}
    stages = [json.loads(p.read_text()) for p in out.glob("stages/*/stage.json")]
    assert len(stages) == 5  # each staged encoder fine-tuned once across both processes


@pytest.mark.slow
def test_local_workers_share_the_jobs(finished_run, tmp_path):
    recipe, reference, _ = finished_run
    out = tmp_path / "workers"
    proc = emoplug("run", str(recipe), "--output", str(out), "--workers", "2", "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = results(out)
    assert set(found) == set(results(reference))
    assert {r["process"]["index"] for r in found.values()} == {0, 1}
    assert len(list(out.glob("stages/*/stage.json"))) == 5
    for job_id, result in found.items():  # same numbers as a single process
        assert result["metrics"]["test"]["ua"] == pytest.approx(
            results(reference)[job_id]["metrics"]["test"]["ua"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["finetune", "staged"])
def test_ddp_strategy_runs_each_job_across_both_processes(tmp_path, mode):
    recipe = write_recipe(tmp_path, RECIPE.replace("mode: staged", f"mode: {mode}")
                          .replace("audio: [mfcc, null]", "audio: [mfcc]")
                          .replace("fusion: [early, attention]", "fusion: [early]"))
    out = tmp_path / "ddp"
    proc = _launch(recipe, out, "train.strategy=ddp", "seeds=[0]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = results(out)
    assert len(found) == 5 and all(r["status"] == "done" for r in found.values())
    assert sorted(r["fold"] for r in found.values()) == ["Ses01", "Ses02", "Ses03", "Ses04",
                                                         "Ses05"]
    assert {r["process"]["count"] for r in found.values()} == {2}
    assert {r["process"]["index"] for r in found.values()} == {0}  # the main process writes


def test_a_stage_failure_from_an_earlier_launch_counts_as_not_run(tmp_path):
    """A failure recorded before this launch started is retried; one recorded by this launch,
    or by another launch while this one runs, stands (it is not fine-tuned twice)."""
    from types import SimpleNamespace

    from emoplug.train.lease_executor import current_stage_status
    from emoplug.train.progress import stamp

    settings = SimpleNamespace(train=SimpleNamespace(save="none"))
    ctx = SimpleNamespace(output_dir=tmp_path, plan=SimpleNamespace(recipe=settings))
    folder = tmp_path / "stages" / "s1"
    folder.mkdir(parents=True)
    (folder / "stage.json").write_text(json.dumps({"status": "failed", "launch": "old"}))
    before = stamp(folder / "stage.json")  # as the new launch found it
    assert current_stage_status(ctx, "s1", "new", before) is None
    assert current_stage_status(ctx, "s1", "old", before)["status"] == "failed"
    (folder / "stage.json").unlink()
    (folder / "stage.json").write_text(json.dumps({"status": "failed", "launch": "beside"}))
    assert current_stage_status(ctx, "s1", "new", before)["status"] == "failed"


def test_shuffles_of_different_seeds_are_independent():
    from emoplug.train.data import bucketed_batches

    lengths = list(range(200))
    assert bucketed_batches(lengths, 8, (0, 1), True) != bucketed_batches(lengths, 8, (1, 0), True)
    assert bucketed_batches(lengths, 8, (3, 2), True) == bucketed_batches(lengths, 8, (3, 2), True)


def test_an_evaluation_loaders_targets_come_in_the_order_of_its_batches():
    import numpy as np

    from emoplug.train.data import Collator, Example, Loader

    examples = [Example(f"u{i}", i % 3, (float(i), 2.0, np.nan), text=" ".join(["w"] * (9 - i)))
                for i in range(7)]
    loader = Loader(examples, Collator(lambda texts: {}), batch_size=3, train=False)
    batches = list(loader)
    targets = loader.targets()
    assert targets.labels.tolist() == [int(x) for b in batches for x in b["targets"].labels]
    assert targets.avd.numpy().tobytes() == np.concatenate(
        [b["targets"].avd.numpy() for b in batches]).tobytes()
    assert targets.labels.tolist() != [e.label for e in examples]  # length-sorted, not as given


@pytest.mark.parametrize(("fit_on", "predicts_train"), [("gold", False), ("predicted", True)])
def test_two_stage_predicts_the_training_set_only_when_its_mapper_fits_on_predictions(
        tmp_path, monkeypatch, fit_on, predicts_train):
    from emoplug.train import evaluate as evaluate_module

    recipe = write_recipe(tmp_path, RECIPE.replace(
        "grid: {text: [bert], audio: [mfcc, null], fusion: [early, attention], approach: "
        "[direct]}",
        f"approach:\n  two: {{type: two_stage, mapper_fit_on: {fit_on}}}\n"
        "grid: {text: [null], audio: [mfcc], fusion: [early], approach: [two]}"))
    predicted_sizes, original = [], evaluate_module.predict

    def spy(model, loader, *args, **kwargs):
        predicted_sizes.append(len(loader.examples))
        return original(model, loader, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "predict", spy)
    summary = run_plan(load_plan(recipe), tmp_path / "out", verbosity=-1)
    assert len(summary.done) == 5 and not summary.failed
    found = list(results(tmp_path / "out").values())
    train_sizes = sorted(r["sizes"]["train"] for r in found)
    test_sizes = sorted(r["sizes"]["test"] for r in found)
    assert sorted(predicted_sizes) == sorted(test_sizes + (train_sizes if predicts_train else []))
    assert all(0 <= r["metrics"]["test"]["ua"] <= 1 for r in found)


def test_loss_log_finds_the_first_bad_step_across_check_windows():
    import torch

    from emoplug.train.loop import TrainingDiverged, _LossLog

    log = _LossLog(epoch=2)
    for step in range(1, 80):
        log.add(torch.tensor(float("nan") if step in (61, 70) else 1.0), 4)
        if step == 60:
            assert log.checked == 50  # the first window was checked, the rest is pending
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 61;"):
        log.mean()


def test_loss_log_mean_is_weighted_by_batch_size():
    import torch

    from emoplug.train.loop import _LossLog

    log = _LossLog(epoch=1)
    for step in range(120):
        log.add(torch.tensor(2.0 if step % 2 else 1.0), 3 if step % 2 else 1)
    assert log.mean() == pytest.approx((60 * 1.0 + 60 * 2.0 * 3) / (60 + 180))


def test_staged_multitask_loss_masks_rows_without_targets():
    import torch
    import torch.nn.functional as F

    from emoplug.train.text_stage import _StageLoss
    from emoplug.types import Targets

    torch.manual_seed(0)
    outputs = torch.randn(5, 7, requires_grad=True)
    labels = torch.tensor([1, -1, 0, 3, -1])
    avd = torch.tensor([[3.0, 2.0, 1.0], [float("nan")] * 3, [2.0, 2.5, 4.0],
                        [1.0, float("nan"), 5.0], [4.0, 4.0, 4.0]])
    mean, std = torch.tensor([3.0, 3.0, 3.0]), torch.tensor([1.0, 2.0, 0.5])
    loss = _StageLoss(4, mean, std)(outputs, Targets(labels, avd))
    gold = (avd - mean) / std
    ok = torch.isfinite(gold)
    expected = (F.cross_entropy(outputs[labels >= 0, :4], labels[labels >= 0])
                + ((outputs[:, 4:] - gold.nan_to_num())[ok] ** 2).mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    nothing = _StageLoss(4, None, None)(outputs, Targets(torch.full((5,), -1), avd))
    nothing.backward()
    assert nothing.item() == 0.0 and torch.isfinite(outputs.grad).all()


def test_bf16_mixed_precision_runs_stages_and_heads(tmp_path):
    """The full grid's precision on CPU autocast: the staged encoder, an attention-pooled
    audio encoder and every fusion of the recipe train to finite metrics, after a
    full-precision Accelerator in the same process (Accelerate keeps one state per process)."""
    from accelerate import Accelerator

    Accelerator(mixed_precision="no")
    recipe = write_recipe(tmp_path, RECIPE.replace(
        "encoder: {hidden: 16, stride: 2}", "encoder: {type: attention_pool, hidden: 16}"))
    summary = run_plan(load_plan(recipe, ["train.mixed_precision=bf16"]), tmp_path / "out",
                       verbosity=0)
    assert summary.done and not summary.failed
    for result in results(tmp_path / "out").values():
        assert result["mixed_precision"] == "bf16"
        assert 0.0 <= result["metrics"]["test"]["wa"] <= 1.0
        assert 0.0 <= result["metrics"]["test"]["macro_f1"] <= 1.0


def test_inputs_packed_on_the_device_give_the_same_results(finished_run, tmp_path,
                                                           monkeypatch):
    """EMOPLUG_DEVICE_INPUTS=on (the default on GPUs) pads staged text outputs and audio
    features from banks on the training device: every job's predictions equal the host
    path's, and each bank is built once per process."""
    from emoplug.train import context, packed

    recipe, reference, _ = finished_run
    shutil.copytree(reference.parent / "cache", tmp_path / "cache", dirs_exist_ok=True)
    built, padded = [], []
    original_init, original_pad = packed.PackedSequences.__init__, packed.PackedSequences.pad

    def counting_init(self, ids, *args, **kwargs):
        built.append(len(ids))
        original_init(self, ids, *args, **kwargs)

    def counting_pad(self, ids):
        padded.append(len(ids))
        return original_pad(self, ids)

    monkeypatch.setattr(context.PackedSequences, "__init__", counting_init)
    monkeypatch.setattr(context.PackedSequences, "pad", counting_pad)
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "on")
    summary = run_plan(load_plan(recipe), tmp_path / "out", verbosity=0)
    assert len(summary.done) == 15 and not summary.failed
    # one audio bank for the whole run; a (sequence, pooled) pair per stage (5 folds)
    assert len(built) == 1 + 2 * 5
    # batches came from the banks: at least the final predictions over every split, once
    # for the text of each job and once more for the audio of a multimodal one
    final_passes = sum(-(-n // 16) * len(r["modalities"])
                       for r in results(tmp_path / "out").values() for n in r["sizes"].values())
    assert len(padded) >= final_passes
    for job_id in results(reference):
        packed_csv = (tmp_path / "out" / "jobs" / job_id / "predictions.csv").read_text()
        assert packed_csv == (reference / "jobs" / job_id / "predictions.csv").read_text()


FROZEN_AUDIO = RECIPE.replace("mode: staged", "mode: frozen").replace(
    "grid: {text: [bert], audio: [mfcc, null], fusion: [early, attention], approach: [direct]}",
    "grid: {text: [bert], audio: [mfcc], fusion: [early], approach: [direct]}")


def _predictions(run: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in run.glob("jobs/*/predictions.csv")}


def test_frozen_outputs_packed_on_the_device_give_the_same_results(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, FROZEN_AUDIO)
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "off")
    assert run_plan(load_plan(recipe), tmp_path / "host", verbosity=0).done
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "on")
    summary = run_plan(load_plan(recipe), tmp_path / "device", verbosity=0)
    assert len(summary.done) == 5 and not summary.failed
    assert _predictions(tmp_path / "device") == _predictions(tmp_path / "host")


def test_out_of_device_memory_falls_back_to_host_padding(tmp_path, monkeypatch, capsys):
    """Packing that runs out of GPU memory warns once; every job still runs, padded on the
    host, with the same results."""
    import torch

    from emoplug.train import context

    recipe = write_recipe(tmp_path, FROZEN_AUDIO)
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "off")
    run_plan(load_plan(recipe), tmp_path / "host", verbosity=0)
    attempts = []

    def out_of_memory(self, *args, **kwargs):
        attempts.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 5.66 GiB")

    monkeypatch.setattr(context.PackedSequences, "__init__", out_of_memory)
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "on")
    summary = run_plan(load_plan(recipe), tmp_path / "device", verbosity=0)
    assert len(summary.done) == 5 and not summary.failed and len(attempts) == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if "ran out" in line]
    assert warnings == ["emoplug: warning: packing inputs on cpu ran out of memory (CUDA out "
                        "of memory. Tried to allocate 5.66 GiB); padding batches on the host "
                        "from now on (EMOPLUG_DEVICE_INPUTS=off skips trying)"]
    assert _predictions(tmp_path / "device") == _predictions(tmp_path / "host")
