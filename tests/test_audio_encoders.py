"""The trainable audio encoders: masking, shapes, gradients, and swapping through config."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from emoplug.registry import get_registry
from emoplug_audio.encoders import EncoderConfig, build_encoder
from emoplug_audio.nn import AttentionPoolEncoder, CNNEncoder, MixedLayersEncoder, MLPEncoder

D = 12
CASES = [
    ({"type": "cnn"}, 1),
    ({"type": "cnn", "stride": 2, "layers": 3, "kernel_size": 3}, 1),
    ({"type": "mlp"}, 1),
    ({"type": "attention_pool", "hidden": 16}, 1),
    ({"type": "attention_pool", "hidden": 16}, 3),  # stacked wav2vec layers, learned mix
    ({"type": "cnn", "hidden": 8}, 2),
]


def make(settings: dict, n_layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(**settings), D * n_layers, n_layers=n_layers)


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
    features = torch.randn(3, 15, D * n_layers)
    mask = torch.arange(15)[None, :] < torch.tensor([[15], [8], [1]])
    encoder(features, mask).pooled.pow(2).sum().backward()
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
])
def test_featurizers_build_their_configured_encoder(settings, cls, dim):
    encoder = get_registry().build("audio", settings).build_encoder(D)
    assert isinstance(encoder, cls) and encoder.dim == dim


def test_encoder_config_is_validated():
    with pytest.raises(ValidationError, match="kernel_size"):
        EncoderConfig(kernel_size=4)
    with pytest.raises(ValidationError):
        get_registry().build("audio", {"type": "mfcc", "encoder": {"type": "lstm"}})
    with pytest.raises(ValidationError):
        get_registry().build("audio", {"type": "mfcc", "encoder": {"hiden": 3}})


@pytest.mark.parametrize(("settings", "n_layers"), CASES)
def test_trains_under_bf16_autocast_with_padding(settings, n_layers):
    """``mixed_precision: bf16`` runs encoders under autocast: masking must fit bf16."""
    encoder = make(settings, n_layers)
    features = torch.randn(3, 10, D * n_layers)
    mask = torch.arange(10)[None, :] < torch.tensor([10, 4, 1])[:, None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = encoder(features, mask).pooled
    assert torch.isfinite(pooled.float()).all()
    pooled.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)
