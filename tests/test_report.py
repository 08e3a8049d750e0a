"""emoplug report: a synthetic run folder with known metrics -> expected tables, tests, files."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from emoplug.errors import EmoplugError
from emoplug.report import write_report
from emoplug.report.stats import paired_test, summarize

LABELS = ["neutral", "happy", "angry", "sad"]
FOLDS = ["s1", "s2", "s3"]
SEEDS = [0, 1]
PROTOCOL = {"type": "loso", "subset": "all", "dev": "random", "dev_fraction": 0.2, "seed": 0}
TEXT = {"roberta": {"type": "roberta", "pretrained": "roberta-base", "mode": "staged"},
        "bert": {"type": "bert", "pretrained": "bert-base-uncased", "mode": "staged"}}
AUDIO = {"mfcc": {"type": "mfcc", "n_mfcc": 40}}
FUSION = {"none": {"type": "none"}, "attention": {"type": "attention", "attention": True,
                                                  "layer_norm": True},
          "attn_ablate": {"type": "attention", "attention": False, "layer_norm": True},
          "early": {"type": "early"}}
APPROACH = {"direct": {"type": "direct"}, "two_stage": {"type": "two_stage", "oracle": False},
            "oracle": {"type": "two_stage", "oracle": True}}
#: cell id -> (text, audio, fusion, approach, base UA)
CELLS = {
    "c_text_direct": ("roberta", None, "none", "direct", 0.70),
    "c_text_two": ("roberta", None, "none", "two_stage", 0.66),
    "c_audio_direct": (None, "mfcc", "none", "direct", 0.55),
    "c_multi_direct": ("roberta", "mfcc", "attention", "direct", 0.72),
    "c_multi_two": ("roberta", "mfcc", "attention", "two_stage", 0.69),
    "c_multi_ablate": ("roberta", "mfcc", "attn_ablate", "direct", 0.68),
    "c_multi_oracle": ("roberta", "mfcc", "attention", "oracle", 0.80),
    "c_multi_early": ("roberta", "mfcc", "early", "direct", 0.71),
    "c_bert": ("bert", None, "none", "direct", 0.65),
}
FAILED_JOB = ("c_bert", "s2", 1)
MISSING_JOB = ("c_bert", "s3", 1)


def label_of(text, audio, fusion, approach) -> str:
    return "+".join(n for n in (text, audio) if n) + f"/{fusion}/{approach}"


def job_id(cell: str, fold: str, seed: int) -> str:
    return f"{cell}-{fold}-{seed}"


def ua_of(cell: str, fold: str, seed: int) -> float:
    """A known, varied UA per job."""
    base = CELLS[cell][4]
    rng = np.random.default_rng([FOLDS.index(fold), seed, sorted(CELLS).index(cell)])
    return round(base + 0.02 * FOLDS.index(fold) - 0.01 * seed + float(rng.normal(0, 0.01)), 4)


def rmse_of(cell: str, fold: str, seed: int, dim: int) -> float:
    text, audio = CELLS[cell][0], CELLS[cell][1]
    base = {0: 0.6 if text else 0.8, 1: 0.65 if audio else 0.75, 2: 0.7}[dim]
    return round(base + 0.01 * FOLDS.index(fold) + 0.005 * seed, 4)


def confusion_of(ua: float) -> list[list[int]]:
    right = int(round(100 * ua))
    return [[right if i == j else (100 - right) // 3 for j in range(4)] for i in range(4)]


def metrics_of(cell: str, fold: str, seed: int) -> dict:
    ua = ua_of(cell, fold, seed)
    metrics = {"n": 400, "wa": ua + 0.01, "ua": ua, "macro_f1": ua - 0.02, "micro_f1": ua + 0.01,
               "per_class": {c: {"precision": ua, "recall": ua, "f1": ua, "support": 100}
                             for c in LABELS},
               "confusion": confusion_of(ua)}
    if CELLS[cell][3] != "direct":
        for d, name in enumerate(("valence", "arousal", "dominance")):
            rmse = rmse_of(cell, fold, seed, d)
            metrics.update({f"{name}_rmse": rmse, f"{name}_mae": rmse * 0.8,
                            f"{name}_pearson": 0.5, f"{name}_ccc": 0.4})
    return metrics


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def make_run(root: Path, cells=CELLS, failed=(FAILED_JOB,), missing=(MISSING_JOB,),
             started=()) -> Path:
    """A run folder as ``emoplug run`` writes it, with known metrics."""
    run = root / "synth"
    jobs = [{"id": job_id(c, f, s), "cell": c, "label": label_of(*cells[c][:4]), "fold": f,
             "seed": s} for c in cells for f in FOLDS for s in SEEDS]
    write_json(run / "plan.json", {"recipe": {"name": "synth", "seeds": SEEDS},
                                   "source": "recipes/synth.yaml", "folds": FOLDS,
                                   "jobs": jobs})
    for cell, (text, audio, fusion, approach, _) in cells.items():
        names = {"text": text, "audio": audio, "fusion": fusion, "approach": approach}
        for fold in FOLDS:
            for seed in SEEDS:
                key = (cell, fold, seed)
                if key in missing:
                    continue
                folder = run / "jobs" / job_id(*key)
                write_json(folder / "config.json", {
                    "recipe": "synth", "cell": cell, "cell_label": label_of(*names.values()),
                    "names": names, "dataset": {"type": "demo"}, "protocol": PROTOCOL,
                    "train": {"epochs": 2}, "text": TEXT.get(text), "audio": AUDIO.get(audio),
                    "fusion": FUSION[fusion], "approach": APPROACH[approach],
                    "fold": fold, "seed": seed})
                if key in started:
                    continue
                common = {"job": job_id(*key), "cell": cell,
                          "cell_label": label_of(*names.values()), "fold": fold, "seed": seed}
                if key in failed:
                    write_json(folder / "result.json", {
                        "status": "failed", **common,
                        "error": "RuntimeError: CUDA out of memory", "traceback": "...",
                        "timings": {"total_s": 3.0}})
                    continue
                write_json(folder / "result.json", {
                    "status": "done", **common, "names": names,
                    "modalities": [m for m in ("text", "audio") if names[m]],
                    "text_mode": "staged" if text else None, "stage": None,
                    "protocol": {**PROTOCOL, "protocol": "loso", "speaker_dependent": False},
                    "labels": LABELS,
                    "metrics": {"dev": {}, "test": metrics_of(*key)},
                    "best_epoch": 1, "epochs_run": 2, "dev_loss": 0.5, "history": [],
                    "sizes": {"train": 800, "dev": 200, "test": 400},
                    "timings": {"setup_s": 1.0, "train_s": 10.0 + seed, "eval_s": 0.5,
                                "total_s": 11.5 + seed},
                    "device": "cpu", "mixed_precision": "no", "versions": {}})
                (folder / "predictions.csv").write_text(
                    "id,gold,predicted," + ",".join(f"p_{c}" for c in LABELS) + "\n")
    for fold in FOLDS:
        write_json(run / "stages" / f"st-{fold}" / "stage.json", {
            "status": "done", "stage": f"st-{fold}", "text": TEXT["roberta"], "fold": fold,
            "seed": 0, "best_epoch": 2, "epochs_run": 3, "dev_loss": 0.4, "train_s": 100.0,
            "total_s": 120.0, "utterances": 1400})
    write_json(run / "stages" / "st-bad" / "stage.json",
               {"status": "failed", "stage": "st-bad", "error": "OSError: no such model"})
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("run"))
    written = write_report(run, None, ["md", "html", "csv"])
    return run, written


def section(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end >= 0 else None]


def row_with(markdown: str, *needles: str) -> list[str]:
    for line in markdown.splitlines():
        if line.startswith("|") and all(n in line for n in needles):
            return [c.strip() for c in line.strip("|").split(" | ")]
    raise AssertionError(f"no table row with {needles}")


def values(cell: str, metric: str = "ua", pairs=None) -> list[float]:
    pairs = pairs or [(f, s) for f in FOLDS for s in SEEDS
                      if (cell, f, s) not in (FAILED_JOB, MISSING_JOB)]
    return [metrics_of(cell, f, s)[metric] for f, s in pairs]


# -- statistics -------------------------------------------------------------------------------

def test_summarize_is_mean_and_sample_std():
    s = summarize([0.5, 0.7, 0.9, float("nan"), None])
    assert s.n == 3
    assert s.mean == pytest.approx(0.7)
    assert s.std == pytest.approx(0.2)  # ddof=1: sqrt((0.04 + 0 + 0.04) / 2)
    single = summarize([0.4])
    assert single.mean == 0.4 and math.isnan(single.std)
    assert summarize([]).n == 0


def test_paired_test_matches_scipy_by_hand():
    a = np.array([0.71, 0.74, 0.69, 0.73, 0.75, 0.70, 0.72])
    b = np.array([0.69, 0.70, 0.68, 0.70, 0.71, 0.70, 0.69])
    test = paired_test(a, b)
    diff = a - b
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
    assert test.n == 7
    assert test.mean_diff == pytest.approx(diff.mean())
    assert (test.ci_low, test.ci_high) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert test.t_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert test.wilcoxon_p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    few = paired_test(a[:5], b[:5])
    assert few.n == 5 and math.isnan(few.wilcoxon_p) and not math.isnan(few.t_p)
    one = paired_test([0.5], [0.4])
    assert one.n == 1 and math.isnan(one.ci_low) and math.isnan(one.t_p)


# -- the report -------------------------------------------------------------------------------

def test_files_written(report):
    run, written = report
    out = run / "report"
    assert written["md"] == out / "report.md" and written["html"] == out / "report.html"
    assert written["csv"] == out / "results.csv" and written["cells_csv"] == out / "cells.csv"
    stems = {"stage1", "approach", "modality_1", "modality_2", "text_encoders",
             "audio_features", "fusion", "ablation", "confusion"}
    for stem in stems:
        png = (out / "figures" / f"{stem}.png").read_bytes()
        assert png.startswith(b"\x89PNG"), stem
        assert (out / "figures" / f"{stem}.svg").read_text().lstrip().startswith("<?xml"), stem
    markdown = written["md"].read_text()
    for stem in stems:
        assert f"](figures/{stem}.png)" in markdown
    page = written["html"].read_text()
    assert page.count("data:image/png;base64,") == len(stems)
    assert 'src="figures/' not in page and "<table>" in page


def test_cell_means_and_stds(report):
    run, written = report
    with open(written["cells_csv"], newline="") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    for cell in CELLS:
        expected = values(cell)
        assert float(rows[cell]["ua_mean"]) == pytest.approx(np.mean(expected))
        assert float(rows[cell]["ua_std"]) == pytest.approx(np.std(expected, ddof=1))
        assert int(rows[cell]["ua_n"]) == len(expected)
    two = values("c_multi_two", "valence_rmse")
    assert float(rows["c_multi_two"]["valence_rmse_mean"]) == pytest.approx(np.mean(two))
    assert rows["c_multi_direct"]["valence_rmse_mean"] == ""
    assert rows["c_bert"]["incomplete"] == "True" and rows["c_bert"]["done"] == "4"

    markdown = written["md"].read_text()
    expected = values("c_multi_direct")
    row = row_with(section(markdown, "Results per cell"), "roberta+mfcc/attention/direct")
    assert row[1] == "6/6"
    assert row[2] == "loso, speaker-independent"
    assert row[4] == f"{100 * np.mean(expected):.1f} ± {100 * np.std(expected, ddof=1):.1f}"
    assert "sample standard deviation (ddof=1)" in markdown


def test_direct_vs_two_stage_paired(report):
    _, written = report
    markdown = section(written["md"].read_text(), "Direct vs two-stage")
    a, b = values("c_multi_direct"), values("c_multi_two")
    diff = np.subtract(a, b)
    half = stats.t.ppf(0.975, 5) * diff.std(ddof=1) / math.sqrt(6)
    row = row_with(markdown, "roberta+mfcc/attention: direct vs two_stage", "| UA |")
    assert row[2] == "6"
    assert row[5] == (f"{100 * diff.mean():+.1f} [{100 * (diff.mean() - half):.1f}, "
                      f"{100 * (diff.mean() + half):.1f}]")

    def p(value):
        return "<0.001" if value < 0.001 else f"{value:.3f}"

    assert row[6] == p(stats.ttest_rel(a, b).pvalue)
    assert row[7] == p(stats.wilcoxon(a, b).pvalue)
    assert "roberta/none: direct vs two_stage" in markdown
    assert "oracle" not in markdown  # the oracle ablation is not an approach comparison


def test_comparisons_and_ablations(report):
    _, written = report
    markdown = written["md"].read_text()
    modality = section(markdown, "Modality importance")
    assert row_with(modality, "Text only")[1] == "roberta/none/direct"
    assert row_with(modality, "Audio only")[1] == "mfcc/none/direct"
    assert row_with(modality, "Text + audio")[1] == "roberta+mfcc/attention/direct"
    ablation = section(markdown, "Ablations")
    a, b = values("c_multi_ablate"), values("c_multi_direct")
    row = row_with(ablation, "fusion.attention=false", "| UA |")
    assert row[0] == "roberta+mfcc/attention/direct: fusion.attention=false"
    assert row[5].startswith(f"{100 * np.mean(np.subtract(a, b)):+.1f} [")
    assert row_with(ablation, "approach.oracle=true", "| UA |")[0].startswith(
        "roberta+mfcc/attention/two_stage")
    text = section(markdown, "Transformer comparison")
    pooled = [v for c in CELLS if CELLS[c][0] == "roberta" and c not in
              ("c_multi_ablate", "c_multi_oracle") for v in values(c)]
    row = row_with(text, "| roberta |")
    assert row[2] == str(len(pooled))
    assert row[4] == f"{100 * np.mean(pooled):.1f} ± {100 * np.std(pooled, ddof=1):.1f}"
    assert "| bert |" in text
    fusion = section(markdown, "Fusion comparison")
    assert "| attention |" in fusion and "| early |" in fusion and "attn_ablate" not in fusion
    stage1 = section(markdown, "Stage-1 dimensional error")
    row = row_with(stage1, "roberta/none/two_stage")
    rmse = [rmse_of("c_text_two", f, s, 0) for f in FOLDS for s in SEEDS]
    assert row[3] == f"{np.mean(rmse):.3f} ± {np.std(rmse, ddof=1):.3f}"
    confusion = section(markdown, "Error analysis: confusion matrices")
    assert "roberta+mfcc/attention/direct (6 jobs)" in confusion
    compute = section(markdown, "Compute")
    assert row_with(compute, "| roberta |")[1] == "3"  # three finished stages
    assert "Head phase" in compute and "Encoder phase" in compute


def test_failed_and_missing_jobs_are_listed(report):
    _, written = report
    markdown = written["md"].read_text()
    listed = section(markdown, "Missing and failed jobs")
    failed = row_with(listed, "| failed |")
    assert failed[1:4] == ["bert/none/direct", "s2", "1"]
    assert failed[5] == "RuntimeError: CUDA out of memory"
    assert row_with(listed, "| not started |")[2] == "1 job (fold/seed): s3/1"
    assert "OSError: no such model" in listed
    assert row_with(section(markdown, "Results per cell"), "bert/none/direct")[1] == "4/6 †"
    assert "RuntimeError: CUDA out of memory" in written["html"].read_text()
    with open(written["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(CELLS) * len(FOLDS) * len(SEEDS)
    by_status = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert len(by_status["failed"]) == 1 and len(by_status["not started"]) == 1
    assert by_status["failed"][0]["error"] == "RuntimeError: CUDA out of memory"
    assert by_status["failed"][0]["test_ua"] == ""
    done = next(r for r in rows if r["job"] == job_id("c_multi_two", "s2", 0))
    assert float(done["test_ua"]) == ua_of("c_multi_two", "s2", 0)
    assert float(done["test_valence_rmse"]) == rmse_of("c_multi_two", "s2", 0, 0)
    assert done["test_happy_f1"] != "" and done["total_s"] == "11.5"
    assert done["text"] == "roberta" and done["audio"] == "mfcc" and done["fusion_type"] == \
        "attention"


def test_run_in_progress_reports_what_finished(tmp_path):
    cells = {k: CELLS[k] for k in ("c_text_direct", "c_text_two")}
    started = {("c_text_two", f, s) for f in FOLDS for s in SEEDS}
    run = make_run(tmp_path, cells, failed=(), missing=(), started=started)
    written = write_report(run, tmp_path / "out", ["md"])
    markdown = written["md"].read_text()
    assert row_with(markdown, "roberta/none/direct")[1] == "6/6"
    assert row_with(markdown, "roberta/none/two_stage")[1] == "0/6 †"
    assert "6 started without a result" in markdown
    assert "no result.json yet" in section(markdown, "Missing and failed jobs")
    # the sections without data say so in one line
    assert "_No pair of cells differing only in the approach" in markdown
    assert "_No audio cell with results in this run._" in markdown
    assert "_No multimodal cell with results in this run._" in markdown
    assert "_No ablation cell" in markdown
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.parametrize("make", [lambda p: p / "absent", lambda p: p])
def test_not_a_run_is_a_one_line_error(tmp_path, make):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(EmoplugError) as info:
        write_report(make(tmp_path), None, ["md"])
    message = str(info.value)
    assert "\n" not in message and "run folder" in message


def test_unknown_format_is_an_error(tmp_path):
    run = make_run(tmp_path, {"c_text_direct": CELLS["c_text_direct"]}, (), ())
    with pytest.raises(EmoplugError, match="pdf"):
        write_report(run, None, ["pdf"])


def test_import_is_light():
    code = ("import sys, emoplug.report; "
            "print(any(m in sys.modules for m in ('matplotlib', 'scipy', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_run_without_plan_and_unplanned_folders(tmp_path):
    cells = {"c_text_direct": CELLS["c_text_direct"]}
    run = make_run(tmp_path, cells, (), ())
    stray = run / "jobs" / "old-job"
    write_json(stray / "result.json", {"status": "done", "job": "old-job", "cell": "old",
                                       "cell_label": "old/none/direct", "fold": "s1",
                                       "seed": 0, "metrics": {"test": {"ua": 0.1}}})
    markdown = write_report(run, tmp_path / "a", ["md"])["md"].read_text()
    assert "1 job folders that are not in plan.json" in markdown
    assert "old/none/direct" not in markdown
    (run / "plan.json").unlink()
    markdown = write_report(run, tmp_path / "b", ["md"])["md"].read_text()
    assert row_with(markdown, "roberta/none/direct")[1] == "6"
    assert row_with(markdown, "old/none/direct")[1] == "1"
