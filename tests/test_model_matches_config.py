"""Each job trains the model its own ``config.json`` describes (issue 28, part 1).

Two cells on one featurizer at one level share a feature store (one cache key), so a job
must not build its encoder from the store's featurizer, which carries the settings of the
first cell built for that key.
"""

from __future__ import annotations

import json

import pytest

from emoplug.testing import TINY_DEMO
from emoplug.train.model_check import check_job, check_run

pytestmark = pytest.mark.slow


def two_encoders_recipe() -> dict:
    base = {"type": "mfcc", "n_mfcc": 13, "deltas": 0, "level": "functionals"}
    return {
        "name": "two_encoders", "dataset": TINY_DEMO,
        "protocol": {"type": "loso", "dev": "session"}, "seeds": [0],
        "train": {"epochs": 3, "batch_size": 16},
        "audio": {"stats_linear": {**base, "encoder": {"type": "linear"}},
                  "stats_mlp": {**base, "encoder": {"type": "mlp", "hidden": 24,
                                                    "layers": 2}}},
        "fusion": {"head": {"type": "none", "hidden": 0}},
        "extra": [{"audio": "stats_linear", "fusion": "head", "approach": "direct"},
                  {"audio": "stats_mlp", "fusion": "head", "approach": "direct"}],
    }


def test_cells_sharing_a_featurizer_train_the_encoder_their_config_names(run_recipe, tmp_path):
    results = run_recipe(two_encoders_recipe(), folds=1)
    by_cell = {r["cell_label"]: r for r in results}
    linear, mlp = by_cell["stats_linear/head/direct"], by_cell["stats_mlp/head/direct"]
    assert linear["model"]["audio"]["class"] == "LinearEncoder"
    assert mlp["model"]["audio"]["class"] == "MLPEncoder"
    assert linear["model"]["audio"]["parameters"] != mlp["model"]["audio"]["parameters"]
    run_dir = next(tmp_path.glob("run-*"))
    predictions = {r["cell_label"]: (run_dir / "jobs" / r["job"] / "predictions.csv")
                   .read_text() for r in results}
    assert predictions["stats_linear/head/direct"] != predictions["stats_mlp/head/direct"]
    assert check_run(run_dir) == {"checked": 2, "mismatched": []}


def test_the_check_names_a_job_whose_model_differs_from_its_config(run_recipe, tmp_path):
    results = run_recipe(two_encoders_recipe(), folds=1)
    run_dir = next(tmp_path.glob("run-*"))
    folder = run_dir / "jobs" / results[0]["job"]
    config = json.loads((folder / "config.json").read_text())
    config["audio"]["encoder"] = {**config["audio"]["encoder"], "type": "mlp"}
    (folder / "config.json").write_text(json.dumps(config))
    problems = check_job(folder)
    assert len(problems) == 1 and problems[0].startswith(f"{folder.name}: audio built")
