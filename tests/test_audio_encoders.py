"""The trainable audio encoders: masking, shapes, gradients, and swapping through config."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from emoplug.audio_encoders import AudioEncoderConfig, build_audio_encoder
from emoplug.audio_nn import (
    AttentionPoolEncoder,
    CNNEncoder,
    LinearEncoder,
    MixedLayersEncoder,
    MLPEncoder,
)
from emoplug.registry import get_registry

D = 12
CASES = [
    ({"type": "cnn"}, 1),
    ({"type": "cnn", "stride": 2, "layers": 3, "kernel_size": 3}, 1),
    ({"type": "mlp"}, 1),
    ({"type": "attention_pool", "hidden": 16}, 1),
    ({"type": "attention_pool", "hidden": 16}, 3),  # stacked wav2vec layers, learned mix
    ({"type": "cnn", "hidden": 8}, 2),
    ({"type": "linear"}, 1),
    ({"type": "mlp", "standardize": True, "hidden": 8}, 1),
]


def calibrated(encoder: torch.nn.Module, features: torch.Tensor,
               mask: torch.Tensor) -> torch.nn.Module:
    """``encoder`` with its standardizer (if any) fitted on ``features``, as training does."""
    from emoplug.train.loop import calibrated_modules

    modules = calibrated_modules(encoder)
    for module in modules:
        module.begin_calibration()
    with torch.no_grad():
        encoder(features, mask)
    for module in modules:
        module.end_calibration()
    return encoder


def make(settings: dict, n_layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_audio_encoder(AudioEncoderConfig(**settings), D * n_layers, n_layers=n_layers)


@pytest.mark.parametrize(("settings", "n_layers"), CASES)
def test_padding_with_garbage_changes_nothing(settings, n_layers):
    encoder = make(settings, n_layers).eval()
    gen = torch.Generator().manual_seed(1)
    short = torch.randn(1, 9, D * n_layers, generator=gen)
    long = torch.randn(1, 20, D * n_layers, generator=gen)
    batch = torch.randn(2, 20, D * n_layers, generator=gen) * 100  # garbage padding
    batch[0, :9], batch[1] = short[0], long[0]
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0, :9], mask[1] = True, True

    alone = encoder(short, torch.ones(1, 9, dtype=torch.bool))
    padded = encoder(batch, mask)
    torch.testing.assert_close(padded.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.pooled[1], encoder(long, mask[1:]).pooled[0])
    real = int(alone.mask.sum())
    assert real == padded.mask[0].sum()
    torch.testing.assert_close(padded.sequence[0, :real], alone.sequence[0, :real],
                               atol=1e-5, rtol=1e-5)
    assert padded.sequence.shape[:2] == padded.mask.shape
    assert padded.pooled.shape == (2, encoder.dim) and padded.dim == encoder.dim


def test_cnn_stride_shortens_sequence_and_mask():
    encoder = make({"type": "cnn", "stride": 2, "layers": 2}, 1).eval()
    mask = torch.zeros(2, 21, dtype=torch.bool)
    mask[0, :7], mask[1] = True, True
    out = encoder(torch.randn(2, 21, D), mask)
    assert out.sequence.shape == (2, 6, 128)  # 21 -> 11 -> 6
    assert out.mask[0].sum() == 2 and out.mask[1].all()  # 7 -> 4 -> 2 real frames
    assert (out.sequence[0, 2:] == 0).all()


@pytest.mark.parametrize(("settings", "n_layers"), CASES)
def test_backward_reaches_every_parameter(settings, n_layers):
    encoder = make(settings, n_layers).train()
    features = torch.randn(3, 15, D * n_layers, requires_grad=True)
    mask = torch.arange(15)[None, :] < torch.tensor([[15], [8], [1]])
    encoder(features, mask).pooled.pow(2).sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_layer_mix_starts_as_the_mean_of_the_layers():
    encoder = make({"type": "mlp", "hidden": 4, "dropout": 0.0}, 3)
    assert isinstance(encoder, MixedLayersEncoder)
    layers = torch.randn(1, 5, 3, D)
    mixed = encoder.mix(layers.reshape(1, 5, 3 * D))
    torch.testing.assert_close(mixed, layers.mean(2))


def test_float16_features_are_accepted():
    encoder = make({"type": "attention_pool"}, 1).eval()
    out = encoder(torch.randn(2, 4, D).half(), torch.ones(2, 4, dtype=torch.bool))
    assert out.pooled.dtype == torch.float32


@pytest.mark.parametrize(("settings", "cls", "dim"), [
    ({"type": "mfcc"}, CNNEncoder, 128),
    ({"type": "spectrogram", "encoder": {"type": "mlp", "hidden": 32}}, MLPEncoder, 32),
    ({"type": "prosodic"}, CNNEncoder, 128),
    ({"type": "prosodic", "level": "functionals"}, MLPEncoder, 128),
    ({"type": "mfcc", "encoder": {"type": "attention_pool", "hidden": 64}},
     AttentionPoolEncoder, 64),
    ({"type": "mfcc", "level": "functionals"}, MLPEncoder, 128),
    ({"type": "spectrogram", "level": "functionals", "encoder": {"type": "linear"}},
     LinearEncoder, D),  # no trainable layer: the standardised features themselves
])
def test_featurizers_build_their_configured_encoder(settings, cls, dim):
    encoder = get_registry().build("audio", settings).build_encoder(D)
    assert isinstance(encoder, cls) and encoder.dim == dim


def test_encoder_config_is_validated():
    with pytest.raises(ValidationError, match="kernel_size"):
        AudioEncoderConfig(kernel_size=4)
    with pytest.raises(ValidationError):
        get_registry().build("audio", {"type": "mfcc", "encoder": {"type": "lstm"}})
    with pytest.raises(ValidationError):
        get_registry().build("audio", {"type": "mfcc", "encoder": {"hiden": 3}})


@pytest.mark.parametrize(("settings", "n_layers"), CASES)
def test_trains_under_bf16_autocast_with_padding(settings, n_layers):
    """``mixed_precision: bf16`` runs encoders under autocast: masking must fit bf16."""
    encoder = make(settings, n_layers)
    features = torch.randn(3, 10, D * n_layers, requires_grad=True)
    mask = torch.arange(10)[None, :] < torch.tensor([10, 4, 1])[:, None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = encoder(features, mask).pooled
    assert torch.isfinite(pooled.float()).all()
    pooled.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_linear_encoder_standardises_with_the_training_statistics():
    encoder = make({"type": "linear"}, 1)
    assert not list(encoder.parameters())  # the head is the only trainable layer
    gen = torch.Generator().manual_seed(2)
    train = torch.randn(30, 1, D, generator=gen) * torch.linspace(0.01, 1e4, D) + 7
    train[:, 0, 3] = 5.0  # a constant feature
    ones = torch.ones(30, 1, dtype=torch.bool)
    calibrated(encoder, train, ones).eval()
    scaled = encoder(train, ones).pooled
    varying = [i for i in range(D) if i != 3]
    torch.testing.assert_close(scaled.mean(0)[varying], torch.zeros(D - 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(scaled.std(0, unbiased=False)[varying], torch.ones(D - 1),
                               atol=1e-4, rtol=0)
    # as scikit-learn's StandardScaler: a constant feature is centred and scaled by 1, so
    # 6.0 at test (5.0 in training) is 1.0, not 10,000
    test = train[:1].clone()
    test[0, 0, 3] = 6.0
    assert encoder(test, ones[:1]).pooled[0, 3].item() == pytest.approx(1.0)
    before = encoder.standardize.mean.clone()
    encoder.train()(torch.randn(5, 1, D), ones[:5])  # outside calibration: frozen
    assert torch.equal(encoder.standardize.mean, before)
    assert {"standardize.count", "standardize.mean", "standardize.scale"} <= set(
        encoder.state_dict())


def test_standardizer_matches_scikit_learn_over_batches_of_padded_frames():
    from sklearn.preprocessing import StandardScaler

    gen = torch.Generator().manual_seed(5)
    frames = torch.randn(40, 6, D, generator=gen) * torch.logspace(-3, 4, D) + 1e3
    lengths = torch.randint(1, 7, (40,), generator=gen)
    mask = torch.arange(6)[None, :] < lengths[:, None]
    encoder = make({"type": "mlp", "standardize": True, "hidden": 4}, 1)
    from emoplug.train.loop import calibrated_modules

    (standardizer,) = calibrated_modules(encoder)
    standardizer.begin_calibration()
    for rows in range(0, 40, 7):  # batches of uneven size
        standardizer(frames[rows:rows + 7], mask[rows:rows + 7])
    standardizer.end_calibration()
    reference = StandardScaler().fit(frames[mask].double().numpy())
    torch.testing.assert_close(standardizer.mean, torch.from_numpy(reference.mean_))
    torch.testing.assert_close(standardizer.scale, torch.from_numpy(reference.scale_))


def _accuracy_after_training(labels: torch.Tensor, features: torch.Tensor,
                             test: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Standardise with a linear encoder, train a linear head with Adam; test accuracy."""
    torch.manual_seed(0)
    encoder = build_audio_encoder(AudioEncoderConfig(type="linear"), D)
    head = torch.nn.Linear(encoder.dim, 2)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    mask = torch.ones(len(features), 1, dtype=torch.bool)
    calibrated(encoder, features, mask)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(head(encoder(features, mask).pooled), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = test
    predicted = head(encoder(x, torch.ones(len(x), 1, dtype=torch.bool)).pooled).argmax(1)
    return float((predicted == y).float().mean())


def test_linear_encoder_learns_a_separable_problem_and_not_permuted_labels():
    gen = torch.Generator().manual_seed(3)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 2, (n,), generator=gen)
        x = torch.randn(n, 1, D, generator=gen) * 50 + 1000  # raw scale: needs standardising
        x[:, 0, 0] += (labels * 2 - 1) * 200  # classes 8 std apart in one feature
        return x, labels

    train, test = sample(64), sample(200)
    learned = _accuracy_after_training(train[1], train[0], test)
    permuted = train[1][torch.randperm(64, generator=gen)]
    control = _accuracy_after_training(permuted, train[0], test)
    assert learned > 0.9 and control < 0.75 and learned - control > 0.2
