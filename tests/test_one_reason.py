"""When every job of a run fails with one error (a recipe or data problem, not a job's), the
run says it once and stops instead of printing one FAILED line per job (issue 29)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from torch import nn

from emoplug import Fusion
from emoplug.cli import main
from emoplug.testing import TINY_DEMO

pytestmark = pytest.mark.slow


class BrokenFusion(Fusion):
    name = "one_reason_broken"

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        raise RuntimeError("one_reason_broken cannot be built")


def recipe(tmp_path: Path, cache: Path, fusion: str) -> Path:
    audio = {"type": "mfcc", "n_mfcc": 13, "level": "functionals"}
    data = {"name": "one_reason", "dataset": TINY_DEMO, "seeds": [0], "cache_dir": str(cache),
            "train": {"epochs": 1},
            "audio": {f"a{i}": {**audio, "encoder": {"type": "mlp", "hidden": 8 * (i + 1)}}
                      for i in range(3)},
            "fusion": {"head": {"type": fusion}},
            "extra": [{"audio": f"a{i}", "fusion": "head", "approach": "direct"}
                      for i in range(3)]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_one_error_for_every_job_is_told_once_and_stops_the_run(register_component, tmp_path,
                                                                 emoplug_cache_dir):
    register_component(BrokenFusion)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe(tmp_path, emoplug_cache_dir,
                                                         "one_reason_broken")),
                                       "--output", str(out)])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "one_reason_broken cannot be built" in errors[0]
    assert "of 3 cells" in errors[0] and "run the same command again" in errors[0]
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1  # the first; the others are counted once
    assert any("more job(s) failed with the same error" in line
               for line in result.stderr.splitlines())
    recorded = list(out.glob("jobs/*/result.json"))
    assert 8 <= len(recorded) < 15  # stopped before the 15 jobs (3 cells x 5 folds)


def test_a_failing_cell_beside_working_ones_does_not_stop_the_run():
    from emoplug.train.progress import Failures

    failures = Failures()
    for fold in range(5):  # one cell failing in every fold, nothing finished yet
        failures.add({"error": "boom", "cell": "c1", "fold": fold})
    assert failures.one_reason(done=0) is None  # one cell: the cell's problem
    for cell in ("c2", "c3", "c2"):
        failures.add({"error": "boom", "cell": cell})
    assert failures.one_reason(done=0) == "boom"  # 8 jobs of 3 cells
    assert failures.one_reason(done=1) is None  # a job finished: not every job fails
    failures.add({"error": "other", "cell": "c4"})
    assert failures.one_reason(done=0) is None
