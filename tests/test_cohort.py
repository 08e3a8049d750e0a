"""Cohorts: head jobs sharing their inputs train in lockstep with the results they get alone."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import torch
from test_runner import RECIPE, results, write_recipe

from emoplug.recipe import load_plan
from emoplug.train.cohort import RngStreams, group_cohorts
from emoplug.train.runner import run_plan
from emoplug.train.units import stage_of as stage_of_job

COHORT_RECIPE = RECIPE.replace(
    "grid: {text: [bert], audio: [mfcc, null], fusion: [early, attention], approach: [direct]}",
    "approach:\n  direct: {type: direct}\n  two_stage: {type: two_stage, mapper: mlp}\n"
    "grid: {text: [bert], audio: [mfcc, null], fusion: [early, attention], "
    "approach: [direct, two_stage]}")


def test_cohorts_give_the_results_of_one_job_at_a_time(tmp_path):
    """Every job's predictions, history and metrics are bitwise those of the same job run
    alone (train.cohort: 1), although dropout draws random numbers in every step."""
    recipe = write_recipe(tmp_path, COHORT_RECIPE)
    together = run_plan(load_plan(recipe), tmp_path / "together", verbosity=0)
    alone = run_plan(load_plan(recipe, ["train.cohort=1"]), tmp_path / "alone", verbosity=0)
    assert len(together.done) == len(alone.done) == 30 and not together.failed
    grouped, single = results(tmp_path / "together"), results(tmp_path / "alone")
    assert grouped.keys() == single.keys()  # the setting is not part of job ids
    # per fold: the 4 text+mfcc cells form one cohort, the 2 text-only cells another
    assert sorted(r["cohort"] for r in grouped.values()) == [2] * 10 + [4] * 20
    assert {r["cohort"] for r in single.values()} == {1}
    for job_id, result in grouped.items():
        for key in ("metrics", "history", "best_epoch", "dev_loss"):
            assert result[key] == single[job_id][key], (job_id, key)
        csv = f"jobs/{job_id}/predictions.csv"
        assert (tmp_path / "together" / csv).read_text() == (tmp_path / "alone" / csv).read_text()


def test_a_failure_of_the_shared_batches_fails_that_cohort_not_the_run(tmp_path,
                                                                       monkeypatch):
    """Collating a cohort's batch raises (an unreadable feature file, say): each member of
    that cohort is recorded as failed with the error, and every other job still runs."""
    from emoplug.train import data

    recipe = write_recipe(tmp_path, COHORT_RECIPE)
    original, calls = data.Loader.batch, []

    def flaky(self, indices):
        calls.append(self.examples[0].text_cached is not None)  # a head job's, not a stage's
        if sum(calls) == 2 and calls[-1]:
            raise OSError("cannot read a cached feature file")
        return original(self, indices)

    monkeypatch.setattr(data.Loader, "batch", flaky)
    summary = run_plan(load_plan(recipe), tmp_path / "out", verbosity=0)
    found = results(tmp_path / "out")
    failed = [r for r in found.values() if r["status"] == "failed"]
    assert len(found) == 30 and len(summary.done) + len(summary.failed) == 30
    assert len(failed) in (2, 4) and len({(r["fold"], r["seed"]) for r in failed}) == 1
    assert {r["error"] for r in failed} == {"OSError: cannot read a cached feature file"}
    assert all("Traceback" in r["traceback"] and r["timings"]["total_s"] > 0 for r in failed)


def test_jobs_are_grouped_by_the_inputs_they_share(tmp_path):
    recipe = write_recipe(tmp_path, COHORT_RECIPE.replace(
        "text:\n", "text:\n  roberta: {type: roberta, tiny: true, mode: finetune}\n").replace(
        "grid: {text: [bert]", "grid: {text: [bert, roberta]"))
    plan = load_plan(recipe)
    ctx = SimpleNamespace(plan=plan)  # stage ids read only the plan

    def stage_of(job):
        return stage_of_job(ctx, job)

    cohorts = group_cohorts(plan.jobs, stage_of, size=16)
    for cohort in cohorts:
        first = cohort[0]
        assert {(j.fold, j.seed, j.cell.text, j.cell.audio) for j in cohort} == {
            (first.fold, first.seed, first.cell.text, first.cell.audio)}
    finetune = [c for c in cohorts if c[0].cell.text == "roberta"]
    assert finetune and all(len(c) == 1 for c in finetune)  # nothing worth sharing
    assert sorted(len(c) for c in cohorts if c[0].cell.text == "bert") == [2] * 5 + [4] * 5
    assert sum(map(len, cohorts)) == len(plan.jobs)
    capped = group_cohorts(plan.jobs, stage_of, size=3)
    assert max(map(len, capped)) == 3 and sum(map(len, capped)) == len(plan.jobs)
    assert all(len(c) == 1 for c in group_cohorts(plan.jobs, stage_of, size=1))


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_streams_continue_each_jobs_sequence_across_interleaving():
    """Two jobs drawing in turn get the numbers each would get alone; the global streams
    outside are left where they were."""
    expected = {}
    for seed in (1, 2):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        expected[seed] = [_draws() for _ in range(3)]
    streams = {}
    for seed in (1, 2):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        streams[seed] = RngStreams(torch.device("cpu"))
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    outside = RngStreams(torch.device("cpu"))
    got = {1: [], 2: []}
    for _ in range(3):
        for seed in (1, 2):
            with streams[seed].active(host=True):
                got[seed].append(_draws())
    assert got == expected
    with outside.active(host=True):
        untouched = _draws()
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    assert untouched == _draws()


def test_torch_only_streams_leave_the_host_generators_shared():
    torch.manual_seed(5)
    streams = RngStreams(torch.device("cpu"))
    expected_torch = float(torch.rand(1))
    np.random.seed(7)
    expected_numpy = float(np.random.rand())
    np.random.seed(7)
    torch.manual_seed(0)
    with streams.active():
        assert float(torch.rand(1)) == expected_torch
        assert float(np.random.rand()) == expected_numpy  # the global NumPy stream
