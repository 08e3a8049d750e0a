"""Smoke tests of the benchmark scripts: each core function on tiny settings, the GPU script
without CUDA, and the full-grid cost projection from a given measurement."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import full_grid_cost  # noqa: E402
import gpu  # noqa: E402
import grid  # noqa: E402
import memory  # noqa: E402
import rerun  # noqa: E402
import train_loop  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as the scripts use (stable on a machine shared with other tests)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_loop_compares_ours_trainer_and_bucketing(tmp_path):
    settings = train_loop.LoopSettings(steps=2, batch_size=4, repeats=1, tiny_hidden=16,
                                       tiny_layers=1)
    figures = train_loop.benchmark(settings, tmp_path, verbose=False)
    assert set(figures["median_seconds"]) == {"ours_bucketing_off", "trainer",
                                              "ours_bucketing_on"}
    assert figures["ours_vs_trainer"] > 0 and figures["bucketing_speedup"] > 0
    assert figures["samples_per_epoch"] == 8
    # bucketing sorts similar lengths together: less padding than random batches
    assert figures["padding_share"]["bucketing_on"] <= figures["padding_share"]["bucketing_off"]


def test_spread_texts_have_the_requested_lengths():
    texts = train_loop.spread_texts(["one two three four five six"] * 50, 40, 5, 12, seed=0)
    lengths = [len(t.split()) for t in texts]
    assert len(texts) == 40 and min(lengths) >= 5 and max(lengths) <= 12
    assert len(set(lengths)) > 3


def test_grid_counts_finetunings_features_and_rerun(tmp_path):
    settings = grid.GridSettings(utterances_per_speaker=4, epochs=1, tiny_hidden=16,
                                 tiny_layers=1, texts=("bert",), audios=("mfcc",),
                                 fusions=("early",), approaches=("direct",), head_hidden=16)
    figures = grid.run_grid(settings, tmp_path / "grid", verbosity=-1)
    staged, finetune = figures["modes"]["staged"], figures["modes"]["finetune"]
    assert staged["jobs"] == finetune["jobs"] == 5
    assert staged["done"] == finetune["done"] == 5
    assert staged["encoder_finetunings"] == figures["stages_expected"] == 5
    assert finetune["encoder_finetunings"] == 5  # one per job
    assert figures["warm_up"]["computed_second_pass"] and not any(
        figures["warm_up"]["computed_second_pass"].values())
    assert figures["feature_files"]["computed_during_grid"] == {"mfcc": 0}
    assert figures["feature_files"]["after_grid"]["mfcc"] == figures["warm_up"]["utterances"]
    for mode in (staged, finetune):
        assert mode["rerun"]["skipped"] == 5 and mode["rerun"]["ran"] == 0
    assert figures["speedup_staged_vs_finetune"] > 0


def test_rerun_skips_every_finished_job(tmp_path):
    figures = rerun.benchmark(seeds=1, repeats=1, work=tmp_path / "rerun", phases=False)
    assert figures["jobs"] == figures["skipped"] == 200 and figures["ran"] == 0
    assert "200 skipped" in figures["summary_line"]
    assert figures["median_s"] > 0


def test_memory_records_rss_after_every_job(tmp_path):
    cells = {"text": ["bert", None], "audio": ["mfcc", None], "fusion": ["early"],
             "approach": ["direct"]}
    figures = memory.benchmark(seeds=1, utterances=4, work=tmp_path / "memory", grid=cells)
    assert figures["jobs"] == figures["done"] == 15
    assert len(figures["rss_mib_after_job"]) == 15
    assert figures["peak_rss_mib"] >= max(figures["rss_mib_after_job"]) > 0
    assert "growth_job_5_to_15" in figures


def test_gpu_skips_cleanly_without_cuda(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--out", str(out)])
    gpu.main()
    assert "CUDA absent, skipped" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["skipped"] == "CUDA absent" and report["results"] is None


def test_gpu_small_cpu_mode_measures_every_phase():
    figures = gpu.benchmark("cpu", steps=2, small=True)
    for precision in ("fp32", "bf16"):
        step = figures["encoder_step"][precision]
        assert step["samples_per_s"] > 0 and step["tokens_per_s"] > 0 and step["mfu"] is None
    assert set(figures["phases_bf16"]) >= {"encoder_train_epoch_s", "encoder_encode_fold_s",
                                           "head_train_epoch_s", "head_predict_fold_s"}


@pytest.fixture(scope="module")
def units():
    return full_grid_cost.plan_units(ROOT / "recipes" / "full_grid.yaml")


def test_full_grid_units_come_from_the_plan(units):
    assert units["stages"] == 6 * 5 * 3 == 90
    assert units["jobs"] > 3000 and units["feature_extractions"] == 10039 * 4


def test_full_grid_cost_projects_from_a_given_measurement(tmp_path, units, monkeypatch):
    phases = {"encoder_train_epoch_s": 3.0, "encoder_dev_eval_s": 0.2,
              "encoder_encode_fold_s": 1.0, "head_train_epoch_s": 0.5, "head_dev_eval_s": 0.1,
              "head_predict_fold_s": 0.3, "note": "test"}
    measured = tmp_path / "gpu.json"
    measured.write_text(json.dumps({"benchmark": "gpu", "results": {
        "gpu": "test GPU", "phases_bf16": phases,
        "encoder_step": {"bf16": {"eval_step_s": 0.01}}}}))
    monkeypatch.setattr(full_grid_cost, "plan_units", lambda recipe: units)
    figures = full_grid_cost.estimate(measured, ROOT / "recipes" / "full_grid.yaml")
    projection = figures["projection"]
    stage_s = units["stage_epochs"] * 3.2 + 1.0
    assert projection["seconds_per_stage"] == pytest.approx(stage_s, abs=0.01)
    assert projection["gpu_hours"]["stages"] == pytest.approx(90 * stage_s / 3600, abs=1e-3)
    assert projection["total_h100_hours"] == pytest.approx(
        sum(projection["gpu_hours"].values()), abs=0.02)
    assert "test GPU" in figures["inputs"]["source"]
    assert not any(line.startswith("ASSUMPTION (CPU") for line in figures["assumptions"])


def test_full_grid_cost_labels_the_cpu_fallback_as_an_assumption():
    phases, assumptions, source = full_grid_cost.per_unit_seconds({"benchmark": "grid"})
    assert "ASSUMED" in source and assumptions[0].startswith("ASSUMPTION (CPU -> GPU)")
    assert phases["encoder_train_epoch_s"] > 0
