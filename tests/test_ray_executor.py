"""``emoplug run --executor ray`` on a local Ray cluster of 2 CPUs: the same predictions as
an in-process run, each unit started once, a worker killed mid-unit retried with nothing
lost, and bad settings refused in one line."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from emoplug.recipe import load_plan
from emoplug.train import work_log
from emoplug.train.runner import run_plan

ray = pytest.importorskip("ray")  # a dev dependency: present in CI

# 5 staged encoders, 10 head jobs on them (5 with MFCCs): every unit kind and a dependency
RECIPE = """
name: onray
dataset: {type: demo, utterances_per_speaker: 6}
protocol: {type: loso}
seeds: [0]
train: {epochs: 2, batch_size: 8, lr: 3.0e-3, patience: 2}
text:
  bert: {type: bert, tiny: true, mode: staged, lr: 1.0e-3, tiny_hidden: 16, tiny_layers: 1}
audio:
  mfcc: {type: mfcc, n_mfcc: 13, hop_ms: 20, encoder: {hidden: 16, stride: 2}}
fusion:
  early: {type: early, hidden: 16}
grid: {text: [bert], audio: [mfcc, null], fusion: [early], approach: [direct]}
"""


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray")
    path = folder / "r.yaml"
    path.write_text(RECIPE + f"cache_dir: {folder / 'cache'}\n")
    return path


@pytest.fixture(scope="module")
def reference(recipe) -> dict[str, bytes]:
    """Predictions of the in-process run."""
    out = recipe.parent / "local"
    assert run_plan(load_plan(recipe), out, verbosity=-1).ok
    return predictions(out)


def predictions(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in (out / "jobs").glob("*/predictions.csv")}


def test_a_ray_run_writes_what_an_in_process_run_writes(cluster, recipe, reference):
    out = recipe.parent / "on-ray"
    summary = run_plan(load_plan(recipe), out, verbosity=-1, executor="ray")
    assert summary.ok and summary.totals.done == 10 and summary.stages == 5
    assert predictions(out) == reference  # byte for byte, every job
    audit = work_log.audit(work_log.read(out))
    assert len(audit.started) == 15 and not audit.started_twice and not audit.discarded
    assert set(audit.ended.values()) == {1}
    plan = load_plan(recipe)
    for job in plan.jobs:
        folder = out / "jobs" / job.id
        assert (folder / "config.json").exists() and list((folder / "tb").iterdir())
    assert not list((out / "leases").glob("*.json"))  # every lease released


def test_a_worker_killed_mid_unit_is_retried_and_nothing_is_lost(cluster, recipe, reference):
    out = recipe.parent / "killed"
    killed: list[str] = []
    done = threading.Event()
    plan = load_plan(recipe)
    jobs = {job.id for job in plan.jobs}

    def kill_the_first_job_worker() -> None:
        while not done.is_set() and not killed:
            for event in work_log.read(out):
                if event.event == "start" and event.unit in jobs:
                    os.kill(int(event.process.rsplit(":", 1)[1]), signal.SIGKILL)
                    killed.append(event.unit)
                    break
            done.wait(0.05)

    killer = threading.Thread(target=kill_the_first_job_worker)
    killer.start()
    try:
        summary = run_plan(plan, out, verbosity=-1, executor="ray")
    finally:
        done.set()
        killer.join()
    assert killed, "no job started"
    assert summary.ok and summary.totals.done == 10
    assert predictions(out) == reference
    events = work_log.read(out)
    audit = work_log.audit(events)
    assert not audit.started_twice and not audit.discarded
    unit = killed[0]
    assert [e.event for e in events if e.unit == unit].count("start") == 2  # retried once
    assert any(e.event == "abandon" and e.unit == unit and e.details.get("why") == "worker_lost"
               for e in events)


def test_resources_are_validated(tmp_path):
    from emoplug.errors import RecipeError

    path = tmp_path / "r.yaml"
    path.write_text(RECIPE + "resources: {job: {gpus: 1.5}}\n")
    with pytest.raises(RecipeError, match=r"resources\.job\.gpus.*whole number"):
        load_plan(path)
    path.write_text(RECIPE + "resources: {job: {gpus: 0.125, cpus: 1}, max_retries: 1}\n")
    plan = load_plan(path)
    assert plan.recipe.resources.job.gpus == 0.125
    path.write_text(RECIPE)
    assert [j.id for j in load_plan(path).jobs] == [j.id for j in plan.jobs]  # not in ids


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray", "--workers", "2"], "with --executor ray, Ray's workers run them"),
    (["--address", "auto"], "use it with --executor ray"),
])
def test_bad_executor_options_get_one_line(recipe, tmp_path, args, message):
    from click.testing import CliRunner

    from emoplug.cli import main

    result = CliRunner().invoke(main, ["run", str(recipe), "--output", str(tmp_path / "o"),
                                       *args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
