"""The report's utterance-level results: test UA per speaker for the best cells, and the
bootstrap interval of a cell's UA, on synthetic predictions with known answers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_report import FOLDS, LABELS, SEEDS, job_id, make_run, row_with, section

from emoplug.report import write_report
from emoplug.report.collect import load_run
from emoplug.report.predictions import bootstrap_ua, unweighted_accuracy

CELLS = {"c_text_direct": ("roberta", None, "none", "direct", 0.70),
         "c_audio_direct": (None, "mfcc", "none", "direct", 0.55),
         "c_multi_direct": ("roberta", "mfcc", "attention", "direct", 0.72)}
#: per (fold, gender): how many of each class's 4 test utterances are right (UA = that / 4)
RIGHT = {("s1", "F"): 4, ("s1", "M"): 2, ("s2", "F"): 4, ("s2", "M"): 1, ("s3", "F"): 4,
         ("s3", "M"): 3}
#: the audio-only cell gets s3's female speaker half wrong
AUDIO_RIGHT = {**RIGHT, ("s3", "F"): 2}


def write_predictions(run, right_of=lambda cell: AUDIO_RIGHT if "audio" in cell else RIGHT,
                      speaker_column=True):
    for cell in CELLS:
        right = right_of(cell)
        for fold in FOLDS:
            for seed in SEEDS:
                rows = ["id,speaker,gold,predicted" if speaker_column else "id,gold,predicted"]
                for gender in "FM":
                    speaker = f"{fold}_{gender}"
                    for k in range(16):
                        gold = LABELS[k % 4]
                        predicted = gold if k // 4 < right[(fold, gender)] else LABELS[(k + 1) % 4]
                        rows.append(",".join([f"{speaker}_{k:02d}",
                                              *([speaker] if speaker_column else []),
                                              gold, predicted]))
                path = run / "jobs" / job_id(cell, fold, seed) / "predictions.csv"
                path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp("speakers"), CELLS, (), ())
    write_predictions(folder)
    return folder


def test_unweighted_accuracy_is_mean_recall_over_present_classes():
    gold = np.array(["a", "a", "b", "b", "b", "b"])
    predicted = np.array(["a", "b", "b", "b", "b", "a"])
    assert unweighted_accuracy(gold, predicted) == pytest.approx((0.5 + 0.75) / 2)


def test_per_speaker_table_names_the_hardest_speakers(run, tmp_path):
    markdown = write_report(run, tmp_path, ["md"])["md"].read_text()
    speakers = section(markdown, "Per-speaker results")
    assert (tmp_path / "figures" / "speakers.png").is_file()
    # s2's male speaker: 1 of 4 right per class in every cell and seed
    assert row_with(speakers, "| s2_M |") == ["s2_M", "16", "25.0 ± 0.0", "25.0 ± 0.0",
                                              "25.0 ± 0.0"]
    row = row_with(speakers, "| s3_F |")  # columns: text only, audio only, text + audio
    assert row[2:] == ["100.0 ± 0.0", "50.0 ± 0.0", "100.0 ± 0.0"]
    ua = [1, 0.5, 1, 0.25, 1, 0.75]  # the text-only cell's six speakers
    mean = row_with(speakers, "Mean ± SD over speakers")
    assert mean[2] == f"{100 * np.mean(ua):.1f} ± {100 * np.std(ua, ddof=1):.1f}"
    # averaged over the cells: s2_M 25.0, s1_M 50.0, s3_M 75.0, s3_F (100 + 50 + 100) / 3
    assert ("Hardest speakers (lowest test UA averaged over the 3 cells shown): s2_M (25.0), "
            "s1_M (50.0), s3_M (75.0); easiest: s2_F (100.0)") in speakers


def test_per_speaker_results_need_a_speaker_independent_protocol(tmp_path):
    folder = make_run(tmp_path, CELLS, (), ())
    write_predictions(folder)
    for result in folder.glob("jobs/*/result.json"):
        data = json.loads(result.read_text())
        data["protocol"]["speaker_dependent"] = True
        result.write_text(json.dumps(data))
    markdown = write_report(folder, tmp_path / "out", ["md"])["md"].read_text()
    assert "No cell ran under a speaker-independent protocol" in section(
        markdown, "Per-speaker results")


def test_predictions_without_speakers_are_counted_not_guessed(tmp_path):
    folder = make_run(tmp_path, CELLS, (), ())
    write_predictions(folder, speaker_column=False)
    markdown = write_report(folder, tmp_path / "out", ["md"])["md"].read_text()
    speakers = section(markdown, "Per-speaker results")
    assert "18 finished jobs of these cells have no speaker column" in speakers
    assert "No job of the best cells wrote per-utterance predictions with speakers" in speakers


def naive_bootstrap(run, cell, resamples, seed):
    """The same interval by literal resampling of indices (another random stream)."""
    rng = np.random.default_rng(seed)
    data = {}
    for job in cell.done:
        rows = [line.split(",") for line in (
            run.path / "jobs" / job.id / "predictions.csv").read_text().split()[1:]]
        data.setdefault(job.fold, []).append((np.array([r[2] for r in rows]),
                                              np.array([r[3] for r in rows])))
    means = []
    for _ in range(resamples):
        per_fold = []
        for jobs in data.values():
            idx = rng.integers(0, len(jobs[0][0]), len(jobs[0][0]))
            per_fold.append(np.mean([unweighted_accuracy(g[idx], p[idx]) for g, p in jobs]))
        means.append(np.mean(per_fold))
    return np.percentile(means, [2.5, 97.5])


def test_bootstrap_interval_resamples_utterances_within_folds(run, tmp_path):
    data = load_run(run)
    cell = next(c for c in data.cells if c.id == "c_text_direct")
    interval = bootstrap_ua(data, cell)
    assert interval.resamples == 1000
    assert bootstrap_ua(data, cell) == interval  # seeded: the same every time
    point = np.mean([(1 + 0.5) / 2, (1 + 0.25) / 2, (1 + 0.75) / 2])
    assert interval.low < point < interval.high
    low, high = naive_bootstrap(data, cell, 2000, 1)
    assert interval.low == pytest.approx(low, abs=0.015)
    assert interval.high == pytest.approx(high, abs=0.015)
    assert bootstrap_ua(data, cell, seed=1) != interval
    markdown = write_report(run, tmp_path, ["md"])["md"].read_text()
    row = row_with(section(markdown, "Results per cell"), "roberta[staged]/none/direct")
    assert row[8] == f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]"
    assert "UA 95% bootstrap CI" in markdown
    written = write_report(run, tmp_path / "csv", ["csv"])
    with open(written["cells_csv"], newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["cell"] == "c_text_direct")
    assert (float(row["ua_boot_low"]), float(row["ua_boot_high"])) == (interval.low,
                                                                       interval.high)


def test_a_perfect_cell_has_a_degenerate_interval(tmp_path):
    folder = make_run(tmp_path, CELLS, (), ())
    write_predictions(folder, right_of=lambda cell: dict.fromkeys(RIGHT, 4))
    data = load_run(folder)
    interval = bootstrap_ua(data, data.cells[0])
    assert (interval.low, interval.high) == (1.0, 1.0)
