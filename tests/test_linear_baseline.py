"""The classic baseline is logistic regression (issue 28, part 2): a ``linear`` encoder with
a linear head, fitted with ``train.optimizer: lbfgs``, gives scikit-learn's
``StandardScaler`` + ``LogisticRegression`` on identical inputs shaped like real acoustic
functionals (scales from 1e-3 to 1e4, a constant column, 7 overlapping classes, 10 speakers).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from emoplug.metrics import classification_metrics
from emoplug.recipe import TrainSettings
from emoplug.registry import get_registry
from emoplug.testing import utterance_statistics
from emoplug.train.data import Collator, Example, Loader
from emoplug.train.loop import fit, predict
from emoplug.train.model import CellModel

HELD_OUT = ("spk00", "spk04", "spk07")  # three leave-one-speaker-out folds (speed)


class _CPU:
    device = torch.device("cpu")
    scaler = None

    @staticmethod
    def autocast():
        import contextlib

        return contextlib.nullcontext()


def _examples(features: np.ndarray, labels: np.ndarray) -> list[Example]:
    return [Example(f"u{i:04d}", int(y), (np.nan,) * 3, audio=(lambda row=row: row[None, :]),
                    frames=1) for i, (row, y) in enumerate(zip(features, labels, strict=True))]


def emoplug_linear_cell(train: tuple[np.ndarray, np.ndarray], test: np.ndarray,
                        settings: TrainSettings) -> np.ndarray:
    """Class probabilities on ``test`` from emoplug's linear cell trained on ``train``:
    the ``linear`` encoder, fusion ``none`` with ``hidden: 0``, approach ``direct``."""
    registry = get_registry()
    torch.manual_seed(0)
    encoder = registry.build("audio", {"type": "egemaps", "level": "functionals",
                                       "encoder": {"type": "linear"}}).build_encoder(
        train[0].shape[1])
    approach = registry.build("approach", {"type": "direct"})
    n_classes = int(train[1].max()) + 1
    fusion = registry.build("fusion", {"type": "none", "hidden": 0}).build(
        {"audio": encoder.dim}, n_classes)
    model = CellModel(fusion, audio=encoder)
    train_examples = _examples(*train)
    from emoplug.train.data import targets_of

    approach.prepare([str(c) for c in range(n_classes)], (1.0, 5.0), targets_of(train_examples))
    collate = Collator(None)
    fit(model, approach.loss, Loader(train_examples, collate, 64, True),
        Loader(train_examples[:50], collate, 64, False), settings, _CPU())
    test_examples = _examples(test, np.zeros(len(test), dtype=int))
    out = predict(model, Loader(test_examples, collate, 64, False), _CPU.device)
    order = np.argsort([int(i[1:]) for i in out.ids])
    return approach.decode(out.outputs).probs[order]


def scikit_learn(train: tuple[np.ndarray, np.ndarray], test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=10000, tol=1e-10))
    return model.fit(*train).predict_proba(test)


def _ua(labels: np.ndarray, probs: np.ndarray) -> float:
    return classification_metrics(labels, probs.argmax(1), [str(c) for c in range(7)])["ua"]


def test_lbfgs_linear_cell_equals_logistic_regression_on_realistic_functionals():
    features, labels, speakers = utterance_statistics()
    lbfgs = TrainSettings(optimizer="lbfgs")
    for speaker in HELD_OUT:
        test = speakers == speaker
        train = (features[~test], labels[~test])
        ours = emoplug_linear_cell(train, features[test], lbfgs)
        reference = scikit_learn(train, features[test])
        np.testing.assert_allclose(ours, reference, atol=2e-3)
        assert (ours.argmax(1) == reference.argmax(1)).mean() >= 0.98
        assert abs(_ua(labels[test], ours) - _ua(labels[test], reference)) <= 0.01


def test_the_linear_cell_learns_and_its_permuted_label_control_does_not():
    features, labels, speakers = utterance_statistics()
    lbfgs = TrainSettings(optimizer="lbfgs")
    rng = np.random.default_rng(0)
    learned, control = [], []
    for speaker in HELD_OUT:
        test = speakers == speaker
        train = (features[~test], labels[~test])
        learned.append(_ua(labels[test], emoplug_linear_cell(train, features[test], lbfgs)))
        permuted = (train[0], rng.permutation(train[1]))
        control.append(_ua(labels[test], emoplug_linear_cell(permuted, features[test], lbfgs)))
    chance = 1 / 7
    assert np.mean(learned) > chance + 0.2
    assert np.mean(control) < chance + 0.1


@pytest.mark.parametrize("optimizer", ["lbfgs"])
def test_the_lbfgs_fit_is_deterministic(optimizer):
    features, labels, speakers = utterance_statistics(seed=1)
    test = speakers == "spk03"
    train = (features[~test], labels[~test])
    settings = TrainSettings(optimizer=optimizer)
    first = emoplug_linear_cell(train, features[test], settings)
    assert np.array_equal(first, emoplug_linear_cell(train, features[test], settings))


def _recipe(**cell_train) -> dict:
    return {
        "name": "lbfgs_cell", "dataset": {"type": "demo", "utterances_per_speaker": 6},
        "protocol": {"type": "loso"}, "seeds": [0],
        "audio": {"stats": {"type": "mfcc", "n_mfcc": 13, "deltas": 0, "level": "functionals",
                            "encoder": {"type": "linear"}}},
        "fusion": {"linear_head": {"type": "none", "hidden": 0}},
        "extra": [{"audio": "stats", "fusion": "linear_head", "approach": "direct",
                   **({"train": cell_train} if cell_train else {})}],
    }


@pytest.mark.slow
def test_a_cell_fitted_with_lbfgs_records_its_own_settings_and_converges(run_recipe, tmp_path):
    import json

    (result,) = run_recipe(_recipe(optimizer="lbfgs", C=0.5), folds=1)
    assert result["stopping"]["stopped_by"] == "converged"
    assert result["history"][-1]["iterations"] > 0
    config = json.loads((next(tmp_path.glob("run-*")) / "jobs" / result["job"]
                         / "config.json").read_text())
    assert config["train"] == {"C": 0.5, "optimizer": "lbfgs"}


def test_cell_training_settings_are_validated_and_keep_other_ids():
    from emoplug.errors import RecipeError
    from emoplug.recipe import build_plan

    plain = build_plan(_recipe())
    assert "train" not in plain.cells[0].config
    assert plain.train_settings(plain.cells[0]).optimizer == "adamw"
    own = build_plan(_recipe(optimizer="lbfgs", C=2))
    assert own.cells[0].id != plain.cells[0].id
    assert own.train_settings(own.cells[0]).C == 2.0
    for bad, message in [({"optimiser": "lbfgs"}, "extra[0].train.optimiser: unknown key"),
                         ({"strategy": "ddp"}, "extra[0].train.strategy: a setting of the "
                                               "whole run"),
                         ({"C": -1}, "extra[0].train.C:")]:
        with pytest.raises(RecipeError, match=re.escape(message)):
            build_plan(_recipe(**bad))


def test_lbfgs_refuses_to_fine_tune_a_text_encoder():
    from emoplug.errors import RecipeError
    from emoplug.recipe import build_plan

    data = _recipe(optimizer="lbfgs")
    data["text"] = {"tiny": {"type": "bert", "tiny": True, "mode": "finetune"}}
    data["extra"][0].update(text="tiny", audio=None)
    with pytest.raises(RecipeError, match=r"extra\[0\]\.text: optimizer lbfgs fits full-batch"):
        build_plan(data)
