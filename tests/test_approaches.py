"""Decision approaches: losses, the two-stage mapper, oracle ablation, state round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emoplug import EmoplugError, Targets
from emoplug.registry import get_registry
from emoplug_approaches.mappers import fit_mapper, predict_proba

LABELS = ("neutral", "happy", "angry", "sad")
CENTRES = np.array([[3.0, 2.0, 2.5], [4.5, 4.0, 3.5], [1.5, 4.5, 4.0], [1.5, 1.5, 1.5]])


def approach(settings: dict):
    return get_registry().build("approach", settings)


def clustered(n_per_class: int, seed: int, spread: float = 0.15) -> Targets:
    """Four well-separated AVD clusters on the 1-5 scale, one per class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(LABELS)), n_per_class)
    avd = CENTRES[labels] + spread * rng.standard_normal((len(labels), 3))
    return Targets(labels=torch.as_tensor(labels), avd=torch.as_tensor(avd, dtype=torch.float32))


def standardised(app, targets: Targets, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Stage-1 outputs that predict ``targets.avd`` up to Gaussian ``noise``."""
    z = app.scaler.standardise(targets.avd.numpy().astype(float))
    z = z + noise * np.random.default_rng(seed).standard_normal(z.shape)
    return torch.as_tensor(z, dtype=torch.float32)


# -- direct ---------------------------------------------------------------------------------

def test_direct_cross_entropy_ignores_unlabelled_rows():
    app = approach({"type": "direct"})
    targets = Targets(labels=torch.tensor([0, 2, -1, 1]), avd=torch.full((4, 3), float("nan")))
    assert app.prepare(LABELS, (1.0, 5.0), targets) == 4
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    expected = F.cross_entropy(logits[[0, 1, 3]], torch.tensor([0, 2, 1]))
    torch.testing.assert_close(app.loss(logits, targets), expected)
    none = Targets(labels=torch.tensor([-1, -1]), avd=torch.zeros(2, 3))
    assert app.loss(logits[:2], none).item() == 0.0
    decoded = app.decode(logits)
    assert decoded.avd is None
    np.testing.assert_allclose(decoded.probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(decoded.labels, logits.argmax(dim=1).numpy())


def test_direct_balanced_class_weights():
    app = approach({"type": "direct", "class_weights": "balanced"})
    targets = Targets(labels=torch.tensor([0, 0, 0, 1, -1]), avd=torch.zeros(5, 3))
    app.prepare(LABELS, (1.0, 5.0), targets)
    # n / (k * count): 4 labelled rows, 2 classes present; absent classes weigh 1
    np.testing.assert_allclose(app.weights, [4 / 6, 2.0, 1.0, 1.0])
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    expected = F.cross_entropy(logits, targets.labels, weight=torch.tensor(app.weights),
                               ignore_index=-1)
    torch.testing.assert_close(app.loss(logits, targets), expected)


# -- two-stage ------------------------------------------------------------------------------

def test_two_stage_needs_avd():
    app = approach({"type": "two_stage"})
    targets = Targets(labels=torch.tensor([0, 1]), avd=torch.full((2, 3), float("nan")))
    with pytest.raises(EmoplugError, match="valence/arousal/dominance") as err:
        app.prepare(LABELS, (1.0, 5.0), targets)
    assert "\n" not in str(err.value)


def test_two_stage_statistics_and_losses():
    targets = clustered(5, seed=0)
    targets.avd[0] = float("nan")
    app = approach({"type": "two_stage"})
    assert app.prepare(LABELS, (1.0, 5.0), targets) == 3
    known = targets.avd[1:].double().numpy()
    np.testing.assert_allclose(app.scaler.mean, known.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(app.scaler.std, known.std(axis=0), rtol=1e-6)

    perfect = standardised(app, targets).nan_to_num(0.0)
    assert app.loss(perfect, targets).item() == pytest.approx(0.0, abs=1e-6)
    shifted = perfect + 0.5
    assert app.loss(shifted, targets).item() == pytest.approx(0.25, rel=1e-5)

    ccc_app = approach({"type": "two_stage", "loss": "ccc"})
    ccc_app.prepare(LABELS, (1.0, 5.0), targets)
    assert ccc_app.loss(perfect, targets).item() == pytest.approx(0.0, abs=1e-5)
    assert ccc_app.loss(-perfect, targets).item() == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("fit_on", ["gold", "predicted", "crossfit"])
@pytest.mark.parametrize("mapper", ["logistic", "mlp", "knn"])
def test_mapper_recovers_well_separated_clusters(mapper, fit_on):
    train, test = clustered(30, seed=1), clustered(10, seed=2)
    app = approach({"type": "two_stage", "mapper": mapper, "mapper_fit_on": fit_on})
    app.prepare(LABELS, (1.0, 5.0), train)
    assert app.fit_uses_outputs() == (fit_on != "gold")
    # as the runner calls it: the training set's outputs only when the mapper reads them
    app.fit(standardised(app, train, noise=0.05) if app.fit_uses_outputs() else None, train)
    decoded = app.decode(standardised(app, test, noise=0.05))
    assert (decoded.labels == test.labels.numpy()).mean() >= 0.95
    assert decoded.probs.shape == (40, 4)
    np.testing.assert_allclose(decoded.probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(decoded.avd, test.avd.numpy(), atol=0.5)


@pytest.mark.parametrize("fit_on", ["predicted", "crossfit"])
def test_a_mapper_fitted_on_predictions_needs_them(fit_on):
    train = clustered(10, seed=1)
    app = approach({"type": "two_stage", "mapper_fit_on": fit_on})
    app.prepare(LABELS, (1.0, 5.0), train)
    with pytest.raises(ValueError, match=f"'{fit_on}' needs the training set's outputs"):
        app.fit(None, train)


@pytest.mark.parametrize(("settings", "splits"), [
    ({"type": "direct"}, 0),
    ({"type": "two_stage"}, 0),
    ({"type": "two_stage", "mapper_fit_on": "predicted", "crossfit_folds": 3}, 0),
    ({"type": "two_stage", "mapper_fit_on": "crossfit"}, 5),
    ({"type": "two_stage", "mapper_fit_on": "crossfit", "crossfit_folds": 2, "oracle": True,
      "mapper": "knn"}, 2),
])
def test_only_crossfit_asks_for_out_of_fold_outputs(settings, splits):
    assert approach(settings).out_of_fold_splits() == splits


def test_crossfit_needs_two_inner_folds():
    from emoplug.recipe import RecipeError, build_plan

    data = {"name": "x", "dataset": {"type": "demo"},
            "approach": {"cf": {"type": "two_stage", "mapper_fit_on": "crossfit",
                                "crossfit_folds": 1}},
            "grid": {"audio": ["mfcc"], "approach": ["cf"]}}
    with pytest.raises(RecipeError, match="approach.cf.crossfit_folds"):
        build_plan(data)


@pytest.mark.parametrize("mapper", ["logistic", "mlp", "knn"])
def test_numpy_mapper_matches_scikit_learn(mapper):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(3)
    points = rng.standard_normal((60, 3))
    for n_classes in (2, 3):
        labels = rng.integers(0, n_classes, 60)
        state = fit_mapper(mapper, points, labels, knn_k=5, mlp_hidden=8)
        model = {"logistic": LogisticRegression(max_iter=1000, random_state=0),
                 "mlp": MLPClassifier(hidden_layer_sizes=(8,), max_iter=2000, random_state=0),
                 "knn": KNeighborsClassifier(n_neighbors=5)}[mapper].fit(points, labels)
        queries = rng.standard_normal((25, 3))
        np.testing.assert_allclose(predict_proba(state, queries), model.predict_proba(queries),
                                   atol=1e-9)


def test_mapper_needs_two_classes():
    with pytest.raises(EmoplugError, match="at least two"):
        fit_mapper("logistic", np.zeros((3, 3)), np.zeros(3, dtype=int), knn_k=1, mlp_hidden=2)


def test_two_stage_class_absent_from_training_gets_zero_probability():
    train = clustered(10, seed=4)
    keep = train.labels != 2
    train = Targets(labels=train.labels[keep], avd=train.avd[keep])
    app = approach({"type": "two_stage"})
    app.prepare(LABELS, (1.0, 5.0), train)
    app.fit(standardised(app, train), train)
    decoded = app.decode(standardised(app, train))
    assert decoded.probs.shape == (30, 4)
    assert (decoded.probs[:, 2] == 0).all() and (decoded.labels != 2).all()


def test_oracle_maps_gold_avd_but_reports_stage_one():
    train, test = clustered(20, seed=5), clustered(5, seed=6)
    test.avd[0] = float("nan")
    for oracle in (False, True):
        app = approach({"type": "two_stage", "oracle": oracle})
        app.prepare(LABELS, (1.0, 5.0), train)
        app.fit(standardised(app, train), train)
        useless = torch.zeros(20, 3)  # stage 1 predicts the training mean for everyone
        decoded = app.decode(useless, test)
        np.testing.assert_allclose(decoded.avd, np.tile(app.scaler.mean, (20, 1)))
        hits = decoded.labels[1:] == test.labels.numpy()[1:]
        assert hits.all() if oracle else hits.mean() <= 0.5
        blind = app.decode(useless)  # no gold given (prediction time): stage-1 AVD is mapped
        assert len(set(blind.labels.tolist())) == 1
        assert decoded.labels[0] == blind.labels[0]  # unknown gold row falls back


# -- joint ----------------------------------------------------------------------------------

def test_joint_loss_and_decode():
    targets = clustered(3, seed=7)
    targets.labels[0] = -1
    targets.avd[1] = float("nan")
    app = approach({"type": "joint", "avd_weight": 0.5})
    assert app.prepare(LABELS, (1.0, 5.0), targets) == 7
    outputs = torch.randn(12, 7, generator=torch.Generator().manual_seed(8))
    gold_z = standardised(app, targets)
    rows = torch.arange(12) != 1
    expected = (F.cross_entropy(outputs[:, :4], targets.labels, ignore_index=-1)
                + 0.5 * F.mse_loss(outputs[rows, 4:], gold_z[rows]))
    torch.testing.assert_close(app.loss(outputs, targets), expected)
    decoded = app.decode(outputs)
    np.testing.assert_array_equal(decoded.labels, outputs[:, :4].argmax(dim=1).numpy())
    np.testing.assert_allclose(decoded.avd, app.scaler.destandardise(outputs[:, 4:].numpy()),
                               rtol=1e-6)
    assert type(app).predicts_avd


# -- state round-trips ----------------------------------------------------------------------

@pytest.mark.parametrize("settings", [
    {"type": "direct", "class_weights": "balanced"},
    {"type": "joint"},
    {"type": "two_stage", "mapper": "logistic"},
    {"type": "two_stage", "mapper": "mlp", "mapper_fit_on": "predicted"},
    {"type": "two_stage", "mapper": "knn", "oracle": True},
    {"type": "two_stage", "mapper": "knn", "oracle": True, "mapper_fit_on": "crossfit"},
])
def test_state_dict_round_trip_decodes_identically(settings):
    train = clustered(15, seed=9)
    app = approach(settings)
    out_dim = app.prepare(LABELS, (1.0, 5.0), train)
    gen = torch.Generator().manual_seed(10)
    train_outputs = (standardised(app, train, noise=0.3) if out_dim == 3
                     else torch.randn(len(train.labels), out_dim, generator=gen))
    app.fit(train_outputs, train)
    state = json.loads(json.dumps(app.state_dict()))

    reloaded = approach(settings)
    reloaded.load_state_dict(state)
    outputs = torch.randn(9, out_dim, generator=gen)
    gold = clustered(3, seed=11)
    gold = Targets(labels=gold.labels[:9], avd=gold.avd[:9])
    for given in (None, gold):
        a, b = app.decode(outputs, given), reloaded.decode(outputs, given)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.probs, b.probs)
        if a.avd is None:
            assert b.avd is None
        else:
            np.testing.assert_array_equal(a.avd, b.avd)


def test_masked_losses_match_boolean_indexing_and_stay_finite_without_rows():
    from emoplug_approaches import losses

    torch.manual_seed(0)
    pred = torch.randn(6, 3, requires_grad=True)
    gold = torch.randn(6, 3)
    known = torch.tensor([True, False, True, True, False, True])
    assert losses.mse(pred, gold, known).item() == pytest.approx(
        F.mse_loss(pred[known], gold[known]).item(), rel=1e-6)
    x, y = pred[known].detach(), gold[known]
    mx, my = x.mean(0), y.mean(0)
    ccc = 2 * ((x - mx) * (y - my)).mean(0) / (x.var(0, unbiased=False)
                                               + y.var(0, unbiased=False) + (mx - my) ** 2)
    assert losses.ccc_loss(pred, gold, known).item() == pytest.approx(
        1 - ccc.mean().item(), rel=1e-5)
    logits = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, -1, 3, 2, -1, 1])
    weights = [0.5, 1.0, 2.0, 1.5]
    expected = F.cross_entropy(logits, labels, weight=torch.tensor(weights), ignore_index=-1)
    assert losses.cross_entropy(logits, labels, weights).item() == pytest.approx(
        expected.item(), rel=1e-6)
    none = torch.zeros(6, dtype=torch.bool)
    for loss in (losses.mse(pred, gold, none), losses.ccc_loss(pred, gold, known & ~known),
                 losses.cross_entropy(logits, torch.full((6,), -1), weights)):
        loss.backward()
        assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all() and torch.isfinite(logits.grad).all()
