"""How training ended: result.json records it, the report flags cells cut short by the epoch
limit while dev loss still improved, and `emoplug run` ends with a one-line warning."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from emoplug.cli import main
from emoplug.report import write_report
from emoplug.report.collect import CellRecord, JobRecord
from emoplug.report.stopping import FLAG, undertrained

RECIPE = """
name: {name}
dataset: {{type: demo, utterances_per_speaker: 6}}
protocol: {{type: loso}}
seeds: [0]
train: {train}
audio:
  stats: {{type: mfcc, n_mfcc: 13, level: functionals, encoder: {{type: linear, hidden: 8}}}}
fusion:
  linear_head: {{type: none, hidden: 0}}
extra:
  - {{audio: stats, fusion: linear_head, approach: direct}}
cache_dir: {cache}
"""


def run(tmp_path: Path, name: str, train: str) -> tuple[Path, str, list[dict]]:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(textwrap.dedent(RECIPE).format(name=name, train=train,
                                                     cache=tmp_path / "cache"))
    out = tmp_path / name
    result = CliRunner().invoke(main, ["run", str(recipe), "-q", "--output", str(out)])
    assert result.exit_code == 0, result.output
    jobs = [json.loads(p.read_text()) for p in sorted(out.glob("jobs/*/result.json"))]
    return out, result.stderr, jobs


@pytest.mark.slow
def test_epoch_limit_with_dev_loss_falling_is_flagged_and_early_stop_is_not(tmp_path):
    # a slow learning rate and two epochs: every fold is cut short while still improving
    out, stderr, jobs = run(tmp_path, "short", "{epochs: 2, patience: 5, lr: 1.0e-4}")
    assert len(jobs) == 5
    for job in jobs:
        assert job["stopping"] == {"stopped_by": "epoch_limit", "epoch_limit": 2,
                                   "dev_loss_improving": True}
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and FLAG in warnings[0] and "stats" in warnings[0]
    report = write_report(out, formats=["md"])["md"].read_text()
    assert f"| stats/linear_head/direct | 5/5 | 2 | 2–2 | 5/5 | {FLAG} |" in report

    # a fast learning rate, patience 1 and a far limit: early stopping ends every fold
    out, stderr, jobs = run(tmp_path, "stopped", "{epochs: 60, patience: 1, lr: 0.1}")
    assert all(j["stopping"]["stopped_by"] == "early_stopping" for j in jobs)
    assert all(j["epochs_run"] < 60 for j in jobs)
    assert "warning" not in stderr
    report = write_report(out, formats=["md"])["md"].read_text()
    assert "| 0/5 | ok |" in report


def job(fold: str, seed: int, stopped_by: str, improving: bool) -> JobRecord:
    result = {"status": "done", "stopping": {"stopped_by": stopped_by, "epoch_limit": 10,
                                             "dev_loss_improving": improving}}
    return JobRecord(f"{fold}{seed}", "c", "cell", fold, seed, result=result)


def test_a_cell_is_flagged_when_half_of_its_folds_were_cut_short():
    short = [job("f1", 0, "epoch_limit", True), job("f2", 0, "epoch_limit", True)]
    fine = [job("f3", 0, "early_stopping", False), job("f4", 0, "epoch_limit", False)]
    assert undertrained(CellRecord("c", "cell", jobs=short + fine))  # 2 of 4 folds
    assert not undertrained(CellRecord("c", "cell", jobs=short[:1] + fine))  # 1 of 3
    # seeds: a fold counts as cut short when half of its seeds were
    seeds = [job("f1", 0, "epoch_limit", True), job("f1", 1, "early_stopping", False),
             job("f2", 0, "early_stopping", False), job("f2", 1, "early_stopping", False)]
    assert undertrained(CellRecord("c", "cell", jobs=seeds))
    legacy = JobRecord("x", "c", "cell", "f1", 0, result={"status": "done"})
    assert not undertrained(CellRecord("c", "cell", jobs=[legacy]))
