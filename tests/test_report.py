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

from emoplug import hookimpl
from emoplug.errors import EmoplugError
from emoplug.report import write_report
from emoplug.report.stats import paired_test, summarize

LABELS = ["neutral", "happy", "angry", "sad"]
FOLDS = ["s1", "s2", "s3"]
SEEDS = [0, 1]
PROTOCOL = {"type": "loso", "subset": "all", "dev": "random", "dev_fraction": 0.2, "seed": 0}
TEXT = {"roberta": {"type": "roberta", "pretrained": "roberta-base", "mode": "staged"},
        "bert": {"type": "bert", "pretrained": "bert-base-uncased", "mode": "staged"},
        "bert_ms": {"type": "bert", "pretrained": "bert-base-uncased", "mode": "staged",
                    "stage_objective": "multitask"},
        "bert_e2e": {"type": "bert", "pretrained": "bert-base-uncased", "mode": "finetune",
                     "stage_objective": "multitask"}}
AUDIO = {"mfcc": {"type": "mfcc", "n_mfcc": 40},
         "w2v_e2e": {"type": "wav2vec", "pretrained": "w2v", "mode": "finetune",
                     "stage_objective": "multitask"},
         "w2v_ms": {"type": "wav2vec", "pretrained": "w2v", "mode": "staged",
                    "stage_objective": "multitask"}}
FUSION = {"none": {"type": "none"}, "attention": {"type": "attention", "attention": True,
                                                  "layer_norm": True},
          "attn_ablate": {"type": "attention", "attention": False, "layer_norm": True},
          "early": {"type": "early"}}
APPROACH = {"direct": {"type": "direct"}, "two_stage": {"type": "two_stage", "oracle": False},
            "oracle": {"type": "two_stage", "oracle": True},
            "two_gold": {"type": "two_stage", "oracle": False, "mapper_fit_on": "gold"},
            "two_cross": {"type": "two_stage", "oracle": False, "mapper_fit_on": "crossfit"}}
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
#: dev UA = test UA + this: the best multimodal cell on dev (early) is not the best on test
#: (attention), and the best text-only cell on dev (bert) is not the best on test (roberta)
DEV_BONUS = {"c_multi_early": 0.05, "c_bert": 0.08}
#: per fold: training and test label counts (neutral, happy, angry, sad)
LABEL_COUNTS = {"s1": ([50, 30, 10, 10], [20, 10, 5, 5]),
                "s2": ([20, 40, 20, 20], [10, 10, 10, 10]),
                "s3": ([30, 30, 20, 20], [4, 2, 0, 4])}
#: cells of the second synthetic run: staged vs end to end, a control, mapper fitting
SPECIAL = {
    "s_staged": ("bert_ms", "mfcc", "early", "direct", 0.70),
    "s_e2e": ("bert_e2e", "mfcc", "early", "direct", 0.74),
    "s_control": ("bert_ms", "mfcc", "early", "direct", 0.27),
    "s_gold": ("bert_ms", "mfcc", "early", "two_gold", 0.60),
    "s_cross": ("bert_ms", "mfcc", "early", "two_cross", 0.66),
    "s_w2v_e2e": (None, "w2v_e2e", "none", "direct", 0.62),
    "s_w2v_staged": (None, "w2v_ms", "none", "direct", 0.58),
}
#: the ablation switches each fusion/approach entry sets, as the plan records them
ABLATIONS = {"attn_ablate": {"fusion.attention": False}, "oracle": {"approach.oracle": True}}
FAILED_JOB = ("c_bert", "s2", 1)
MISSING_JOB = ("c_bert", "s3", 1)


def label_of(text, audio, fusion, approach, protocol=None) -> str:
    under = f"@{protocol}" if protocol else ""
    return "+".join(n for n in (text, audio) if n) + f"/{fusion}/{approach}{under}"


def job_id(cell: str, fold: str, seed: int) -> str:
    return f"{cell}-{fold}-{seed}"


def ua_of(cell: str, fold: str, seed: int) -> float:
    """A known, varied UA per job."""
    base = {**CELLS, **SPECIAL}[cell][4]
    rng = np.random.default_rng([FOLDS.index(fold), seed,
                                 sorted({**CELLS, **SPECIAL}).index(cell)])
    return round(base + 0.02 * FOLDS.index(fold) - 0.01 * seed + float(rng.normal(0, 0.01)), 4)


def rmse_of(cell: str, fold: str, seed: int, dim: int) -> float:
    text, audio = {**CELLS, **SPECIAL}[cell][:2]
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
    if {**CELLS, **SPECIAL}[cell][3] != "direct":
        for d, name in enumerate(("valence", "arousal", "dominance")):
            rmse = rmse_of(cell, fold, seed, d)
            metrics.update({f"{name}_rmse": rmse, f"{name}_mae": rmse * 0.8,
                            f"{name}_pearson": 0.5, f"{name}_ccc": 0.4})
    return metrics


def dev_metrics_of(cell: str, fold: str, seed: int) -> dict:
    test = metrics_of(cell, fold, seed)
    dev = {k: v + DEV_BONUS.get(cell, 0.0) for k, v in test.items()
           if k in ("wa", "ua", "macro_f1")}
    dev.update({k: v - 0.1 * (cell == "c_text_two") for k, v in test.items()
                if k.endswith("_rmse")})
    return dev


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def make_run(root: Path, cells=CELLS, failed=(FAILED_JOB,), missing=(MISSING_JOB,),
             started=(), controls=None, protocols=None) -> Path:
    """A run folder as ``emoplug run`` writes it, with known metrics."""
    run = root / "synth"
    jobs = [{"id": job_id(c, f, s), "cell": c,
             "label": label_of(*cells[c][:4], (protocols or {}).get(c)), "fold": f,
             "seed": s} for c in cells for f in FOLDS for s in SEEDS]
    write_json(run / "plan.json", {"recipe": {"name": "synth", "seeds": SEEDS},
                                   "protocols": sorted(set((protocols or {}).values())),
                                   "source": "recipes/synth.yaml", "folds": FOLDS,
                                   "jobs": jobs})
    for cell, (text, audio, fusion, approach, _) in cells.items():
        names = {"text": text, "audio": audio, "fusion": fusion, "approach": approach,
                 "protocol": (protocols or {}).get(cell)}
        protocol = {**PROTOCOL, "type": names["protocol"]} if names["protocol"] else PROTOCOL
        for fold in FOLDS:
            for seed in SEEDS:
                key = (cell, fold, seed)
                if key in missing:
                    continue
                folder = run / "jobs" / job_id(*key)
                write_json(folder / "config.json", {
                    "recipe": "synth", "cell": cell, "cell_label": label_of(*names.values()),
                    "ablations": {**ABLATIONS.get(fusion, {}), **ABLATIONS.get(approach, {})},
                    "names": names, "dataset": {"type": "demo"}, "protocol": protocol,
                    "train": {"epochs": 2}, "text": TEXT.get(text), "audio": AUDIO.get(audio),
                    "fusion": FUSION[fusion], "approach": APPROACH[approach],
                    **({"control": controls[cell]} if cell in (controls or {}) else {}),
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
                    "metrics": {"dev": dev_metrics_of(*key), "test": metrics_of(*key)},
                    "label_counts": {"train": LABEL_COUNTS[fold][0], "dev": [5, 5, 5, 5],
                                     "test": LABEL_COUNTS[fold][1]},
                    "avd_scale": [1.0, 5.0],
                    "audit": {"test": 40, "train": {"speaker": 0, "session": 0, "dialog": None,
                                                    "transcript": 6 + FOLDS.index(fold),
                                                    "short_transcript": 9},
                              "dev": {"speaker": 0, "session": 0, "dialog": None,
                                      "transcript": 2, "short_transcript": 1},
                              "dev_vs_train": {"dev": 20, "speaker": 20, "session": 20,
                                               "dialog": None, "transcript": 3,
                                               "short_transcript": 4}},
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


def fold_values(cell: str, metric: str = "ua", split: str = "test") -> list[float]:
    """The cell's per-fold means over its finished seeds, in fold order."""
    source = metrics_of if split == "test" else dev_metrics_of
    out = []
    for fold in FOLDS:
        seeds = [s for s in SEEDS if (cell, fold, s) not in (FAILED_JOB, MISSING_JOB)]
        out.append(np.mean([source(cell, fold, s)[metric] for s in seeds]))
    return out


def labelled(cell: str) -> str:
    """The report's label of a cell: text encoders carry their training mode."""
    text, audio, fusion, approach, _ = CELLS[cell]
    inputs = "+".join(n for n in (f"{text}[staged]" if text else None, audio) if n)
    return f"{inputs}/{fusion}/{approach}"


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
    stems = {"stage1", "approach", "modality_1", "modality_2", "text_encoders_1",
             "text_encoders_2", "audio_features", "fusion_1", "fusion_2", "ablation",
             "confusion"}
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


def test_cell_statistics_are_over_fold_means(report):
    run, written = report
    with open(written["cells_csv"], newline="") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    for cell in CELLS:
        expected = fold_values(cell)
        assert float(rows[cell]["ua_mean"]) == pytest.approx(np.mean(expected))
        assert float(rows[cell]["ua_std"]) == pytest.approx(np.std(expected, ddof=1))
        assert int(rows[cell]["ua_n"]) == len(FOLDS)  # n = folds, not folds x seeds
        assert float(rows[cell]["dev_ua_mean"]) == pytest.approx(
            np.mean(fold_values(cell, split="dev")))
    # the seed spread: sqrt of the mean within-fold variance over the folds with two seeds
    spread = np.sqrt(np.mean([np.var([ua_of("c_text_direct", f, s) for s in SEEDS], ddof=1)
                              for f in FOLDS]))
    assert float(rows["c_text_direct"]["ua_seed_sd"]) == pytest.approx(spread)
    two = fold_values("c_multi_two", "valence_rmse")
    assert float(rows["c_multi_two"]["valence_rmse_mean"]) == pytest.approx(np.mean(two))
    assert rows["c_multi_direct"]["valence_rmse_mean"] == ""
    assert rows["c_bert"]["incomplete"] == "True" and rows["c_bert"]["done"] == "4"

    markdown = written["md"].read_text()
    expected = fold_values("c_multi_direct")
    row = row_with(section(markdown, "Results per cell"), labelled("c_multi_direct"))
    assert row[1:4] == ["6/6", "3", "loso, speaker-independent"]
    assert row[5] == f"{100 * np.mean(expected):.1f} ± {100 * np.std(expected, ddof=1):.1f}"
    assert row[7] == f"{100 * spread_of('c_multi_direct'):.1f}"
    assert row[8] == "—"  # the synthetic predictions.csv files hold no rows: no bootstrap
    assert row[9].startswith(f"{100 * np.mean(fold_values('c_multi_direct', split='dev')):.1f}")
    assert "| Micro-F1 |" not in markdown and "equals WA" in markdown


def spread_of(cell: str) -> float:
    return float(np.sqrt(np.mean([np.var([ua_of(cell, f, s) for s in SEEDS], ddof=1)
                                  for f in FOLDS])))


def test_majority_class_floors_by_hand(report):
    _, written = report
    results = section(written["md"].read_text(), "Results per cell")
    # s1: train majority neutral (50); test 20 of 40 neutral: WA 50.0, UA 1/4
    assert row_with(results, "| s1 |")[1:6] == ["neutral", "40", "50.0", "25.0", "16.7"]
    # s2: happy (40); test 10 of 40: WA 25.0, UA 25.0, macro-F1 (2 * .25 / 1.25) / 4 = 10.0
    assert row_with(results, "| s2 |")[1:6] == ["happy", "40", "25.0", "25.0", "10.0"]
    # s3: neutral and happy tie at 30: the first wins; test 4 of 10 neutral, angry absent:
    # WA 40.0, UA 1/3, macro-F1 (2 * .4 / 1.4) / 3
    assert row_with(results, "| s3 |")[1:6] == ["neutral", "10", "40.0", "33.3", "19.0"]
    floor = row_with(results, "Majority-class floor")
    wa = [0.5, 0.25, 0.4]
    assert floor[4] == f"{100 * np.mean(wa):.1f} ± {100 * np.std(wa, ddof=1):.1f}"
    modality = section(written["md"].read_text(), "Modality importance")
    assert row_with(modality, "Majority-class floor")[6].startswith(
        f"{100 * np.mean([0.25, 0.25, 1 / 3]):.1f} ± ")


def corrected_p(a, b, test_train=400 / 800):
    """Nadeau–Bengio's corrected resampled t-test, written out (every synthetic job trains on
    800 utterances and tests on 400)."""
    diff = np.subtract(a, b)
    se = diff.std(ddof=1) * math.sqrt(1 / len(diff) + test_train)
    return 2 * stats.t.sf(abs(diff.mean()) / se, len(diff) - 1), se


@pytest.mark.parametrize("kind", ["corrected", "plain"])
def test_direct_vs_two_stage_paired_at_the_fold_level(report, tmp_path, kind):
    _, written = report
    if kind == "plain":
        written = write_report(report[0], tmp_path, ["md"], stats="plain")
    markdown = section(written["md"].read_text(), "Approach comparison")
    a, b = fold_values("c_multi_direct"), fold_values("c_multi_two")
    diff = np.subtract(a, b)
    se = diff.std(ddof=1) / math.sqrt(3) if kind == "plain" else corrected_p(a, b)[1]
    half = stats.t.ppf(0.975, 2) * se  # n = 3 folds, 2 df
    row = row_with(markdown, "roberta+mfcc/attention: direct vs two_stage", "| UA |")
    assert row[2] == "3"
    assert row[5] == (f"{100 * diff.mean():+.1f} [{100 * (diff.mean() - half):.1f}, "
                      f"{100 * (diff.mean() + half):.1f}]")
    assert f"t-test p ({kind})" in markdown

    def p(value):
        return "<0.001" if value < 0.001 else f"{value:.3f}"

    def test_p(x, y):
        return stats.ttest_rel(x, y).pvalue if kind == "plain" else corrected_p(x, y)[0]

    text_p = test_p(fold_values("c_text_direct"), fold_values("c_text_two"))
    multi_p = test_p(a, b)
    assert row[6] == p(multi_p)
    if kind == "corrected":
        assert multi_p > stats.ttest_rel(a, b).pvalue
        assert "Nadeau–Bengio corrected resampled t-test" in markdown
        assert "n_test/n_train = 0.500" in markdown
    else:
        assert "the plain paired t-test (uncorrected" in markdown
    # Holm over the two UA comparisons of this table
    low, high = sorted([text_p, multi_p])
    holm = {low: min(1, 2 * low), high: max(min(1, 2 * low), high)}
    assert row[7] == p(holm[multi_p])
    assert row[8] == "—"  # Wilcoxon needs at least 6 folds
    assert "roberta/none: direct vs two_stage" in markdown
    assert "oracle" not in markdown  # the oracle ablation is not an approach comparison


def test_winners_are_chosen_on_dev(report):
    """The best multimodal cell on test is attention/direct, on dev early/direct; the best
    text-only cell on test is roberta, on dev bert: the report picks by dev everywhere."""
    assert np.mean(fold_values("c_multi_direct")) > np.mean(fold_values("c_multi_early"))
    assert np.mean(fold_values("c_text_direct")) > np.mean(fold_values("c_bert"))
    _, written = report
    markdown = written["md"].read_text()
    modality = section(markdown, "Modality importance")
    assert "chosen on dev UA" in modality
    assert row_with(modality, "Text only")[1] == labelled("c_bert")
    assert row_with(modality, "Text + audio")[1] == labelled("c_multi_early")
    assert row_with(modality, "Audio only")[1] == labelled("c_audio_direct")
    text = section(markdown, "Transformer comparison")
    assert row_with(text, "| roberta |")[-2] == labelled("c_multi_early")
    fusion = section(markdown, "Fusion comparison")
    assert row_with(fusion, "| attention |")[-2] == labelled("c_multi_direct")
    confusion = section(markdown, "Error analysis: confusion matrices")
    first = confusion.index("**")
    assert confusion[first:].startswith(f"**{labelled('c_multi_early')} (6 jobs)**")
    stage1 = section(markdown, "Stage-1 dimensional error")
    assert "chosen on dev" in stage1


def test_grouped_comparisons_are_paired_on_matching_cells(report):
    _, written = report
    markdown = written["md"].read_text()
    text = section(markdown, "Transformer comparison")
    roberta = [c for c in CELLS if CELLS[c][0] == "roberta" and c not in
               ("c_multi_ablate", "c_multi_oracle")]
    per_fold = np.mean([fold_values(c) for c in roberta], axis=0)
    row = row_with(text, "| roberta |")
    assert row[1:3] == [str(len(roberta)), "3"]
    assert row[4] == f"{100 * np.mean(per_fold):.1f} ± {100 * np.std(per_fold, ddof=1):.1f}"
    # bert vs roberta: only bert/none/direct has a roberta twin (roberta/none/direct)
    pair = row_with(text, "bert vs roberta", "| UA |")
    assert pair[1:4] == ["1", "UA", "3"]
    # bert lacks seed 1 of folds s2 and s3: there both sides use seed 0 alone
    diff = [np.mean([ua_of("c_bert", f, s) - ua_of("c_text_direct", f, s) for s in seeds])
            for f, seeds in (("s1", SEEDS), ("s2", [0]), ("s3", [0]))]
    assert pair[6].startswith(f"{100 * np.mean(diff):+.1f} [")
    fusion = section(markdown, "Fusion comparison")
    pair = row_with(fusion, "attention vs early", "| UA |")
    a, b = fold_values("c_multi_direct"), fold_values("c_multi_early")
    assert pair[1] == "1" and pair[6].startswith(f"{100 * np.mean(np.subtract(a, b)):+.1f} [")
    assert "attn_ablate" not in fusion


def test_ablations_stage1_and_compute(report):
    _, written = report
    markdown = written["md"].read_text()
    ablation = section(markdown, "Ablations")
    a, b = fold_values("c_multi_ablate"), fold_values("c_multi_direct")
    row = row_with(ablation, "fusion.attention=false", "| UA |")
    assert row[0] == f"{labelled('c_multi_direct')}: fusion.attention=false"
    assert row[5].startswith(f"{100 * np.mean(np.subtract(a, b)):+.1f} [")
    assert row_with(ablation, "approach.oracle=true", "| UA |")[0].startswith(
        labelled("c_multi_two"))
    stage1 = section(markdown, "Stage-1 dimensional error")
    row = row_with(stage1, labelled("c_text_two"))
    rmse = [np.mean([rmse_of("c_text_two", f, s, 0) for s in SEEDS]) for f in FOLDS]
    assert row[4] == f"{np.mean(rmse):.3f} ± {np.std(rmse, ddof=1):.3f}"
    assert "corpus scale 1–5" in markdown
    compute = section(markdown, "Compute")
    assert row_with(compute, "| roberta |")[1] == "3"  # three finished stages
    assert "Head phase" in compute and "Encoder phase" in compute
    assert "| 1.0 s ± 0 ms | 10.5 s ± 548 ms | 500 ms ± 0 ms |" in compute


def test_failed_and_missing_jobs_are_listed(report):
    _, written = report
    markdown = written["md"].read_text()
    listed = section(markdown, "Missing and failed jobs")
    failed = row_with(listed, "| failed |")
    assert failed[1:4] == [labelled("c_bert"), "s2", "1"]
    assert failed[5] == "RuntimeError: CUDA out of memory"
    assert row_with(listed, "| not started |")[2] == "1 job (fold/seed): s3/1"
    assert "OSError: no such model" in listed
    assert row_with(section(markdown, "Results per cell"), labelled("c_bert"))[1] == "4/6 †"
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
    assert row_with(markdown, labelled("c_text_direct"))[1] == "6/6"
    assert row_with(markdown, labelled("c_text_two"))[1] == "0/6 †"
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
    assert row_with(markdown, labelled("c_text_direct"))[1] == "6"
    assert row_with(markdown, "old/none/direct")[1] == "1"


@pytest.fixture(scope="module")
def special(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("special"), SPECIAL, (), (),
                   controls={"s_control": "permuted_labels"})
    for fold in FOLDS:  # the staged speech cell's stages
        write_json(run / "stages" / f"sp-{fold}" / "stage.json", {
            "status": "done", "stage": f"sp-{fold}", "kind": "audio", "audio": AUDIO["w2v_ms"],
            "fold": fold, "seed": 0, "best_epoch": 2, "epochs_run": 4, "dev_loss": 0.6,
            "train_s": 300.0, "total_s": 330.0, "utterances": 1400})
    return write_report(run, None, ["md", "csv"])["md"].read_text()


def test_staged_vs_end_to_end_pairs_cells_differing_in_the_text_mode(special):
    staged = section(special, "Staged vs end-to-end")
    row = row_with(staged, "| UA |")
    assert row[0] == ("bert_e2e[finetune]+mfcc/early/direct vs "
                      "bert_ms[staged:multitask]+mfcc/early/direct")
    a, b = fold_values("s_e2e"), fold_values("s_staged")
    assert row[2] == "3"
    assert row[5].startswith(f"{100 * np.mean(np.subtract(a, b)):+.1f} [")
    assert "control" not in staged  # the control cell is not a staged twin


def test_staged_vs_end_to_end_pairs_speech_encoders_too(special):
    staged = section(special, "Staged vs end-to-end")
    row = row_with(staged, "| UA |", "w2v_e2e")
    assert row[0] == ("w2v_e2e[finetune]/none/direct vs "
                      "w2v_ms[staged:multitask]/none/direct")
    a, b = fold_values("s_w2v_e2e"), fold_values("s_w2v_staged")
    assert row[2] == "3"
    assert row[5].startswith(f"{100 * np.mean(np.subtract(a, b)):+.1f} [")
    assert "w2v" not in section(special, "One-setting comparisons")  # compared here alone
    row = row_with(section(special, "Compute"), "| w2v_ms |")  # its stages' time
    assert row[1:3] == ["3", "4.0 ± 0.0"]


def test_one_setting_comparisons_pair_mapper_fitting(special):
    settings = section(special, "One-setting comparisons")
    row = row_with(settings, "approach.mapper_fit_on: crossfit vs gold", "| UA |")
    a, b = fold_values("s_cross"), fold_values("s_gold")
    assert row[5].startswith(f"{100 * np.mean(np.subtract(a, b)):+.1f} [")
    assert row[6] == row[7]  # one comparison per metric: Holm leaves its p as it is


def test_learning_control_beside_its_twin_and_the_floor(special):
    control = section(special, "Learning control")
    row = row_with(control, "| permuted_labels |")
    assert row[0] == "bert_ms[staged:multitask]+mfcc/early/direct"
    assert row[3] == "bert_ms[staged:multitask]+mfcc/early/direct"  # its twin
    twin, permuted = fold_values("s_staged"), fold_values("s_control")
    assert row[4].startswith(f"{100 * np.mean(twin):.1f} ± ")
    assert row[5].startswith(f"{100 * np.mean(permuted):.1f} ± ")
    assert row[6].startswith(f"{100 * np.mean([0.25, 0.25, 1 / 3]):.1f} ± ")
    paired = row_with(control, "vs its control", "| UA |")
    assert paired[5].startswith(f"{100 * np.mean(np.subtract(twin, permuted)):+.1f} [")
    # a control is never a candidate for a best cell or a comparison
    modality = section(special, "Modality importance")
    assert row_with(modality, "Text + audio")[1] == "bert_e2e[finetune]+mfcc/early/direct"
    assert "vs its control" not in section(special, "Fusion comparison")


def test_confusion_figure_has_no_band_under_its_title():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from emoplug.report.figures import ConfusionGrid

    chart = ConfusionGrid("title", LABELS, [(f"cell {i}", np.eye(4)) for i in range(3)])
    fig = Figure(figsize=chart.size(), layout=chart.layout)
    canvas = FigureCanvasAgg(fig)
    chart.draw(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    title_bottom = fig._suptitle.get_window_extent(renderer).y0
    panel_top = max(ax.title.get_window_extent(renderer).y1 for ax in fig.axes[:3])
    assert (title_bottom - panel_top) / fig.dpi < 0.25  # inches between title and panels


def test_protocol_section_shows_the_audit_and_the_dev_test_gap(report):
    _, written = report
    protocol = section(written["md"].read_text(), "Protocol and leakage")
    assert "| Protocol | Fold | Test | speaker | session | dialog | transcript (≥ 4 words) | " \
           "short transcript (< 4 words) |" in protocol

    def table(caption):
        return protocol[protocol.index(f"**Leakage audit: {caption}**"):]

    # test 40; train: speaker 0, session 0, dialog unknown, transcript 7 (17.5%), short 9
    row = row_with(table("test utterances sharing each with train"), "| s2 |")
    assert row[2:8] == ["40", "0 (0.0%)", "0 (0.0%)", "—", "7 (17.5%)", "9 (22.5%)"]
    row = row_with(table("test utterances sharing each with dev"), "| s2 |")
    assert row[6:8] == ["2 (5.0%)", "1 (2.5%)"]
    # dev against train: 20 dev utterances, all of training speakers (dev: random)
    row = row_with(table("dev utterances sharing each with train"), "| s2 |")
    assert row[2:8] == ["20", "20 (100.0%)", "20 (100.0%)", "—", "3 (15.0%)", "4 (20.0%)"]
    assert "counts from 4 words after normalisation" in protocol
    gap = row_with(protocol, "| " + labelled("c_multi_early") + " |")
    assert gap[5] == "5.0 ± 0.0"  # the synthetic dev UA is test UA + 0.05 in every fold
    assert gap[2] == "random"  # the dev each job chose on, from its protocol record
    assert row_with(protocol, "| " + labelled("c_text_direct") + " |")[5] == "0.0 ± 0.0"


def test_protocols_compared_cell_by_cell_with_their_audits(tmp_path):
    cells = {"p_loso": ("roberta", "mfcc", "early", "direct", 0.60),
             "p_random": ("roberta", "mfcc", "early", "direct", 0.75),
             "p_audio": (None, "mfcc", "none", "direct", 0.50)}
    SPECIAL.update(cells)
    try:
        run = make_run(tmp_path, cells, (), (), protocols={
            "p_loso": "loso", "p_random": "random", "p_audio": "loso"})
        markdown = write_report(run, tmp_path / "out", ["md"])["md"].read_text()
        loso, random = np.mean(fold_values("p_loso")), np.mean(fold_values("p_random"))
    finally:
        for key in cells:
            SPECIAL.pop(key)
    protocol = section(markdown, "Protocol and leakage")
    row = row_with(protocol, "| roberta[staged]+mfcc/early/direct |")
    assert row[1].startswith(f"{100 * loso:.1f} ± ")
    assert row[2].startswith(f"{100 * random:.1f} ± ")
    assert row_with(protocol, "| mfcc/none/direct |")[2] == "—"  # not run under random
    # 6, 7, 8 of 40
    assert row_with(protocol, "| test ~ train: transcript (≥ 4 words) |")[1].startswith("17.5 ± ")
    assert row_with(protocol, "| dev ~ train: speaker |")[1] == "100.0 ± 0.0"
    assert "Every other section compares the cells of loso only" in protocol
    # the other sections compare the reference protocol's cells: random's leak stays out
    modality = section(markdown, "Modality importance")
    assert row_with(modality, "Text + audio")[1] == "roberta[staged]+mfcc/early/direct@loso"
    results = section(markdown, "Results per cell")
    assert row_with(results, "Majority-class floor (loso)")[2] == "3"
    assert row_with(results, "Majority-class floor (random)")[2] == "3"


class _SectionPlugin:
    """A third party's report sections: one that counts the run's cells, one that fails."""

    @hookimpl
    def emoplug_register_report_sections(self, register):
        from emoplug.report import Section, Table

        def cell_count(run):
            section = Section("cell_count", "Cells per modality", "Counted by a plugin.")
            counts: dict[str, int] = {}
            for cell in run.cells:
                key = "+".join(cell.modalities) or "none"
                counts[key] = counts.get(key, 0) + 1
            section.tables.append(Table(["Modalities", "Cells"],
                                        [[k, str(v)] for k, v in sorted(counts.items())]))
            return section

        def broken(run):
            raise ValueError("no such metric")

        register("cell_count", cell_count, order=65)
        register("broken_section", broken)


def test_a_plugin_adds_report_sections_and_a_failing_one_is_contained(tmp_path, capsys):
    from emoplug.registry import get_registry

    get_registry().add_plugin(_SectionPlugin(), "sections")
    written = write_report(make_run(tmp_path), tmp_path / "out", ["md", "html"])
    markdown, html = written["md"].read_text(), written["html"].read_text()
    counted = section(markdown, "Cells per modality")
    assert row_with(counted, "| text+audio |")[1] == "5"  # 5 multimodal cells
    assert row_with(counted, "| text |")[1] == "3"
    assert "Cells per modality" in html and "Counted by a plugin." in html
    # placed by its order: after "Approach comparison" (60), before "Modality importance" (70)
    assert markdown.index("Approach comparison") < markdown.index("Cells per modality") \
        < markdown.index("Modality importance")
    assert "This section failed to build (plugin 'sections'): ValueError: no such metric" \
        in markdown
    assert "Results" in markdown and "Compute" in markdown  # the others are unaffected
    assert "report section 'broken_section' of plugin 'sections' failed" in \
        capsys.readouterr().err


# -- rankings on shared folds ----------------------------------------------------------------

def ranked_cell(cell_id: str, dev_ua: dict[str, float]):
    """A finished audio-only cell whose jobs (seed 0) have the given dev UA per fold."""
    from emoplug.report.collect import CellRecord, JobRecord

    names = {"text": None, "audio": "mfcc", "fusion": "none", "approach": "direct",
             "protocol": None}
    jobs = [JobRecord(f"{cell_id}-{fold}", cell_id, cell_id, fold, 0, config={}, result={
        "status": "done", "metrics": {"dev": {"ua": ua}, "test": {"ua": ua, "wa": ua}}})
        for fold, ua in dev_ua.items()]
    return CellRecord(cell_id, cell_id, jobs, names, {"audio": {"type": cell_id}})


def test_rankings_use_only_the_folds_every_candidate_finished(tmp_path):
    """B misses the hardest fold f5: over the folds each finished B (0.58) beats A (0.54);
    over the folds both finished A (0.60) wins. C shares no fold with them and is left out,
    and the report says so."""
    from emoplug.report.collect import RunData
    from emoplug.report.comparisons import modality_section
    from emoplug.report.select import best, rank

    a = ranked_cell("a", {"f1": 0.6, "f2": 0.6, "f3": 0.6, "f4": 0.6, "f5": 0.3})
    b = ranked_cell("b", {"f1": 0.58, "f2": 0.58, "f3": 0.58, "f4": 0.58})
    c = ranked_cell("c", {"f6": 0.9})
    ranking = rank([b, c, a])
    assert [x.id for x in ranking.cells] == ["a", "b"]
    assert ranking.folds == ["f1", "f2", "f3", "f4"] and ranking.left_out == [c]
    assert best([a, b]) is a
    complete = ranked_cell("d", {f: 0.5 for f in ("f1", "f2", "f3", "f4", "f5")})
    assert rank([a, complete]).note("x") is None  # every candidate on every fold
    run = RunData(tmp_path, None, [a, b, c], [])
    section = modality_section(run)
    note = next(n for n in section.notes if n.startswith("Best audio only cell"))
    assert "over the 4 of 6 folds every candidate finished (f1, f2, f3, f4)" in note
    assert note.endswith("left out of the ranking (no fold in common with the others): c.")
    assert section.tables[0].rows[0][1] == "a"
