"""Smoke tests of the benchmark scripts: each core function on tiny settings, the GPU script
without CUDA, and the full-grid cost projection from a given measurement."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import _grid_work as grid_work  # noqa: E402
import cohort  # noqa: E402
import demo_study  # noqa: E402
import full_grid_cost  # noqa: E402
import gpu  # noqa: E402
import grid  # noqa: E402
import memory  # noqa: E402
import pitch  # noqa: E402
import rerun  # noqa: E402
import step_work  # noqa: E402
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
                                 fusions=("early", "late"), approaches=("direct",),
                                 head_hidden=16)
    figures = grid.run_grid(settings, tmp_path / "grid", verbosity=-1)
    staged, finetune = figures["modes"]["staged"], figures["modes"]["finetune"]
    assert staged["jobs"] == finetune["jobs"] == 10
    assert staged["done"] == finetune["done"] == 10
    assert staged["encoder_finetunings"] == figures["stages_expected"] == 5
    assert finetune["encoder_finetunings"] == 10  # one per job
    assert staged["cohort_sizes"] == {2: 10} and finetune["cohort_sizes"] == {1: 10}
    assert set(figures["warm_up"]["first_job_s_untimed"]) == {"staged", "finetune"}
    assert figures["warm_up"]["computed_second_pass"] and not any(
        figures["warm_up"]["computed_second_pass"].values())
    assert figures["feature_files"]["computed_during_grid"] == {"mfcc": 0}
    assert figures["feature_files"]["after_grid"]["mfcc"] == figures["warm_up"]["utterances"]
    for mode in (staged, finetune):
        assert mode["rerun"]["skipped"] == 10 and mode["rerun"]["ran"] == 0
    assert figures["speedup_staged_vs_finetune"] > 0
    assert figures["cost_split"]["jobs_per_stage"] == 2.0


def test_grid_cost_split_explains_the_speedup_from_job_times(tmp_path):
    stages = tmp_path / "stages"
    for i, seconds in enumerate((2.0, 2.8)):
        (stages / str(i)).mkdir(parents=True)
        (stages / str(i) / "stage.json").write_text(json.dumps({"total_s": seconds}))
    modes = {"staged": {"mean_job_s": 0.2, "jobs": 32}, "finetune": {"mean_job_s": 2.4}}
    split = grid.cost_split(modes, tmp_path)
    assert split["stage_s"] == 2.4 and split["jobs_per_stage"] == 16.0
    assert split["stage_to_head_cost"] == 12.0
    assert split["expected_speedup"] == round(2.4 / (2.4 / 16 + 0.2), 2)  # 6.86
    assert split["speedup_if_heads_were_free"] == 16.0
    assert split["speedup_if_stages_were_free"] == 12.0
    assert split["head_job_s_for_target"] == round(2.4 / 8 - 2.4 / 16, 3)  # 0.15


def test_cohort_benchmark_times_both_settings_with_identical_predictions(tmp_path):
    settings = grid.GridSettings(utterances_per_speaker=4, epochs=1, tiny_hidden=16,
                                 tiny_layers=1, texts=("bert",), audios=("mfcc",),
                                 fusions=("early", "late"), approaches=("direct",),
                                 head_hidden=16)
    figures = cohort.benchmark(settings, repeats=1, work=tmp_path / "cohort")
    assert figures["jobs"] == 10 and figures["identical_predictions"]
    assert figures["cohort_sizes"] == {"cohort": {2: 10}, "one_at_a_time": {1: 10}}
    assert all(len(v) == 1 and v[0] > 0 for v in figures["seconds"].values())


def test_rerun_skips_every_finished_job(tmp_path):
    figures = rerun.benchmark(seeds=1, repeats=1, work=tmp_path / "rerun", phases=False)
    assert figures["jobs"] == figures["skipped"] == 205 and figures["ran"] == 0
    assert "205 skipped" in figures["summary_line"]
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


RECIPE = ROOT / "recipes" / "full_grid.yaml"


def test_gpu_small_cpu_mode_times_every_unit():
    figures = gpu.benchmark("cpu", steps=2, small=True, recipe=RECIPE)
    for precision in ("fp32", "bf16"):
        step = figures["encoder_step"][precision]
        assert step["samples_per_s"] > 0 and step["model_tflops"] > 0 and step["mfu"] is None
    units = figures["units"]
    assert len(units["heads"]) == 3 and set(units["encoders"]) == {"bert"}
    host_inputs = [head["host_inputs"] for head in units["heads"].values()]
    for steps in (*units["heads"].values(), *host_inputs, *units["encoders"].values()):
        assert steps["train"]["step_s"] > 0 and steps["eval"]["step_s"] > 0
    assert units["wav2vec_utterance"]["step_s"] > 0


@pytest.fixture(scope="module")
def small_work():
    return step_work.measure(RECIPE, repeats=1, small=True)


def test_step_work_counts_flops_kernels_and_host_time(small_work):
    assert small_work["head_kinds"] > 40 and len(small_work["heads"]) == 3
    for head in small_work["heads"].values():
        assert head["jobs"] > 0 and head["collate_s"] > 0
        assert head["train"]["kernels"] > head["eval"]["kernels"] > 0
        assert head["train"]["flops"] > head["eval"]["flops"] > 0
        assert head["train"]["host_s"] > head["collate_s"]
        gathered = head["train"]["device_inputs"]
        assert gathered["kernels"] > head["train"]["kernels"]  # + the gathers and copies
        assert gathered["flops"] == head["train"]["flops"] and gathered["host_s"] > 0
        assert gathered["hbm_bytes"] == head["device_collate"]["hbm_bytes"] > 0
    bert = small_work["encoders"]["bert"]
    assert bert["train"]["flops"] > 2 * bert["eval"]["flops"] > 0  # backward ~2x forward
    assert small_work["tokenize"]["batch_s"] > 0 and small_work["wav2vec"]["kernels"] > 0
    assert small_work["audio_shapes"]["wav2vec"] == (222, 3 * 768)  # 4.46 s, 3 layers


@pytest.fixture(scope="module")
def units():
    return full_grid_cost.plan_units(grid_work.load_full_plan(RECIPE))


def test_full_grid_units_come_from_the_plan(units):
    assert units["stages"] == {f: 15 for f in ("bert", "roberta", "xlnet", "albert",
                                               "electra", "deberta")}  # 5 folds x 3 seeds
    assert units["jobs"] == sum(units["head_kinds"].values()) == 3525
    # the 8 end-to-end roberta_e2e cells fine-tune roberta in each of their 15 jobs
    assert units["finetune_jobs"] == {"roberta": 8 * 15}
    assert units["wav2vec_configs"] == ["wav2vec"]
    # direct has no second stage, two_stage fits its mapper on gold AVD: no training-set pass
    assert units["head_predicts_train"].keys() == units["head_kinds"].keys()
    assert not any(units["head_predicts_train"].values())
    assert full_grid_cost.predicts_training_set({"type": "two_stage",
                                                 "mapper_fit_on": "predicted"})


def _work_file(tmp_path, heads, host=(0.01, 0.002)):
    """A step_work.json whose steps cost only host time (no kernels, no FLOPs)."""
    def step(host_s):
        return {"flops": 0, "kernels": 0, "host_s": host_s}

    results = {"heads": {name: {"train": step(host[0]), "eval": step(host[1])}
                         for name in heads},
               "encoders": {f: {"train": step(0.03), "eval": step(0.01)}
                            for f in grid_work.ENCODER_CONFIGS},
               "tokenize": {"batch_s": 0.001}, "wav2vec": step(0.02)}
    path = tmp_path / "step_work.json"
    path.write_text(json.dumps({"results": results}))
    return path


def test_full_grid_cost_counts_every_step_of_a_job(tmp_path, units, monkeypatch):
    monkeypatch.setattr(full_grid_cost, "plan_units", lambda plan: units)
    work_path = _work_file(tmp_path, units["head_kinds"])
    figures = full_grid_cost.estimate(RECIPE, 4, gpu_path=tmp_path / "absent.json",
                                      step_work_path=work_path)
    n = {k: -(-v // 32) for k, v in units["fold_sizes"].items()}
    overhead = figures["inputs"]["job_overhead_s"]
    job_s = (units["epochs"] * (n["train"] * 0.01 + n["dev"] * 0.002)
             + n["test"] * 0.002 + overhead)  # dev outputs kept from the best epoch
    projection = figures["projection"]
    kind = next(iter(units["head_kinds"]))
    assert projection["head_kinds"][kind]["seconds_per_job"] == pytest.approx(job_s, abs=0.01)
    fits_on_outputs = {**units, "head_predicts_train": {kind: True}}
    monkeypatch.setattr(full_grid_cost, "plan_units", lambda plan: fits_on_outputs)
    again = full_grid_cost.estimate(RECIPE, 4, gpu_path=tmp_path / "absent.json",
                                    step_work_path=work_path)["projection"]["head_kinds"]
    assert again[kind]["seconds_per_job"] == pytest.approx(job_s + n["train"] * 0.002, abs=0.01)
    assert projection["gpu_hours"]["head_jobs_one_per_gpu"] == pytest.approx(
        3525 * job_s / 3600, rel=1e-3)
    assert projection["gpu_hours"]["head_jobs_4_per_gpu"] == pytest.approx(
        3525 * job_s / 4 / 3600, rel=1e-3)  # all host time here
    stage_s = (units["stage_epochs"] * (n["train"] * 0.031 + n["dev"] * 0.011)
               + (n["train"] + n["dev"] + n["test"]) * 0.011)
    assert projection["seconds_per_stage"]["bert"] == pytest.approx(stage_s, abs=0.1)
    assert projection["gpu_hours"]["wav2vec_features"] == pytest.approx(5531 * 0.02 / 3600,
                                                                        abs=1e-3)
    assert "ESTIMATED" in figures["inputs"]["source"]
    assert figures["assumptions"][0].startswith("ESTIMATED, not measured on a GPU")


def test_estimated_step_is_host_plus_launches_plus_device():
    step = {"flops": 989e12 * 0.25 * 0.004, "kernels": 100, "host_s": 0.002}
    figures = full_grid_cost.estimated_step_s(step)
    assert figures["host_s"] == pytest.approx(0.002 + 100 * 5e-6)
    assert figures["device_s"] == pytest.approx(0.004)  # compute-bound: FLOPs win
    assert figures["step_s"] == pytest.approx(figures["host_s"] + 0.004)
    assert full_grid_cost.estimated_step_s({**step, "flops": 0})["device_s"] == \
        pytest.approx(100 * 3e-6)  # launch-bound: the shortest kernels win
    assert full_grid_cost.estimated_step_s({**step, "hbm_bytes": 3.35e9})["device_s"] == \
        pytest.approx(0.004 + 0.002)  # + memory traffic at half the HBM rate


def test_full_grid_cost_gathers_head_batches_on_the_gpu(tmp_path, units, monkeypatch):
    """Head steps use step_work's device_inputs figures (EMOPLUG_DEVICE_INPUTS=auto on a
    GPU); padding on the host is projected beside them."""
    monkeypatch.setattr(full_grid_cost, "plan_units", lambda plan: units)
    work_path = _work_file(tmp_path, units["head_kinds"])
    work = json.loads(work_path.read_text())
    for head in work["results"]["heads"].values():
        for phase in head.values():
            phase["device_inputs"] = {"flops": 0, "kernels": 0, "hbm_bytes": 0,
                                      "host_s": phase["host_s"] / 2}
    work_path.write_text(json.dumps(work))
    figures = full_grid_cost.estimate(RECIPE, 4, gpu_path=tmp_path / "absent.json",
                                      step_work_path=work_path)
    hours = figures["projection"]["gpu_hours"]
    overhead_h = 3525 * figures["inputs"]["job_overhead_s"] / 3600
    assert hours["head_jobs_one_per_gpu"] - overhead_h == pytest.approx(
        (hours["head_jobs_host_inputs"] - overhead_h) / 2, rel=1e-3)


def test_full_grid_cost_prefers_gpu_measurements(tmp_path, units, monkeypatch):
    monkeypatch.setattr(full_grid_cost, "plan_units", lambda plan: units)
    measured = {"heads": {k: {"train": {"step_s": 0.004}, "eval": {"step_s": 0.001}}
                          for k in units["head_kinds"]},
                "encoders": {f: {"train": {"step_s": 0.03}, "eval": {"step_s": 0.01}}
                             for f in grid_work.ENCODER_CONFIGS},
                "wav2vec_utterance": {"step_s": 0.01}}
    gpu_path = tmp_path / "gpu.json"
    gpu_path.write_text(json.dumps({"results": {"gpu": "test GPU", "units": measured}}))
    figures = full_grid_cost.estimate(RECIPE, 8, gpu_path=gpu_path,
                                      step_work_path=_work_file(tmp_path, []))
    assert figures["inputs"]["source"] == "measured on test GPU (gpu.json)"
    assert figures["inputs"]["step_seconds"]["encoders"]["bert"]["train"]["step_s"] == \
        pytest.approx(0.031)  # tokenizing (step_work.json) added
    projection = figures["projection"]
    assert projection["total_h100_hours"] == projection["total_h100_hours_8_jobs_per_gpu"]
    assert not any(line.startswith("ESTIMATED") for line in figures["assumptions"])


def test_demo_study_records_dev_chosen_winners_floors_and_tables(tmp_path):
    from test_report import CELLS, make_run

    run = make_run(tmp_path, CELLS)
    figures = demo_study.summarize_run(run)
    chosen = figures["best_chosen_on_dev_ua"]
    # the synthetic run's best multimodal cell on dev (early) is not the best on test
    assert chosen["Text + audio"]["cell"] == "roberta[staged]+mfcc/early/direct"
    assert chosen["Text + audio"]["test_ua"]["n"] == 3
    assert figures["majority_floor"]["per_fold"][0] == {
        "fold": "s1", "majority": "neutral", "test_size": 40, "wa": 0.5, "ua": 0.25,
        "macro_f1": 0.1667}
    assert figures["cells"]["mfcc/none/direct"]["test_ua"]["n"] == 3
    assert {"results", "modality", "approach"} <= set(figures["report_tables"])
    assert "synthetic" in figures["caveat"].lower()


def test_pitch_benchmark_scores_known_f0():
    import numpy as np

    rng = np.random.default_rng(0)
    clip = pitch.make_clip(rng)
    assert len(clip.f0) == len(clip.scored) == 1 + len(clip.waveform) // 160
    assert 0 < (clip.f0 > 0).mean() < 1 and clip.scored.mean() > 0.5
    perfect = pitch.score([clip], [clip.f0])
    assert perfect["median_f0_error_hz"] == 0 and perfect["voicing_accuracy"] == 1
    octave = pitch.score([clip], [2 * clip.f0])
    assert octave["gross_error_rate"] == 1 and octave["voicing_accuracy"] == 1
    from emoplug.registry import get_registry

    yin = get_registry().build("audio", {"type": "prosodic", "deltas": 0})
    tracked = pitch.score([clip], [yin.contours(clip.waveform, pitch.SR)[:, 0]])
    assert tracked["median_f0_error_hz"] < 2 and tracked["voicing_accuracy"] > 0.9


def test_featurize_speech_rows_write_what_plan_estimates_and_keep_earlier_rows(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import featurize
    import numpy as np

    rng = np.random.default_rng(0)
    clips = [featurize.speech_like_clip(rng) for _ in range(2)]
    rows = featurize.speech_rows(clips, 2 * featurize.CLIP_S, tmp_path)
    assert len(rows) == 8  # 4 families x 2 levels
    for name, row in rows.items():
        assert row["cache_mb_per_hour"] == pytest.approx(row["plan_estimate_mb_per_hour"],
                                                         rel=2e-3), name
    assert rows["whisper-tiny frames"]["shape_per_clip"] == [500, 5 * 64]  # 10 s at 50 Hz
    assert rows["wavlm-tiny pooled"]["shape_per_clip"] == [1, 5 * 64]
    assert rows["whisper-tiny pooled"]["encoded_seconds_per_audio_second"] == 3.0
    estimates = featurize.real_estimates(tmp_path, 10.0)
    pooled = estimates["facebook/wav2vec2-base pooled layers=all"]
    assert pooled["cache_mb_per_hour"] == round(360 * (13 * 768 * 2 + 144) / 1e6, 1)
    frames = estimates["openai/whisper-base frames layers=all"]
    assert frames["layout"] == "float16 [50/s, 7 layers x 512]"

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"date": "2026-12-01", "machine": {"load_average_1min": 9.4},
                               "results": {"mfcc": {"seconds": 1.0}}}))
    assert featurize.previous_rows(old) == {
        "mfcc": {"seconds": 1.0, "measured": {"date": "2026-12-01", "load_average_1min": 9.4}}}
