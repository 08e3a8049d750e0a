"""The trainable audio encoders: padded features ``[B, T, D]`` + mask ``[B, T]`` -> Encoded.

Padding never changes a real frame's output: the CNN zeroes padded frames before each
convolution (exactly what zero padding of an unpadded utterance does), per-frame layers
cannot see other frames, and pooling ignores masked frames.
"""

from __future__ import annotations

import torch
from torch import nn

from emoplug import Encoded
from emoplug.audio_encoders import AudioEncoderConfig


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real frames: ``[B, T, H]``, ``[B, T]`` -> ``[B, H]``."""
    weights = mask.unsqueeze(-1).to(sequence.dtype)
    return (sequence * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class LayerMix(nn.Module):
    """Softmax-weighted sum of ``n_layers`` stacked hidden-state layers:
    ``[B, T, n_layers * H]`` -> ``[B, T, H]``."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.n_layers = n_layers
        self.logits = nn.Parameter(torch.zeros(n_layers))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, t, d = features.shape
        layers = features.view(b, t, self.n_layers, d // self.n_layers)
        return torch.einsum("btlh,l->bth", layers, self.logits.softmax(0))


class CNNEncoder(nn.Module):
    """A stack of masked 1-D convolutions over time (conv -> GELU -> LayerNorm -> dropout),
    then masked mean pooling. A stride > 1 shortens the sequence and its mask."""

    def __init__(self, input_dim: int, config: AudioEncoderConfig):
        super().__init__()
        self.dim = config.hidden
        self.convs = nn.ModuleList(
            nn.Conv1d(input_dim if i == 0 else config.hidden, config.hidden,
                      config.kernel_size, stride=config.stride, padding=config.kernel_size // 2)
            for i in range(config.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(config.hidden) for _ in range(config.layers))
        self.dropout = nn.Dropout(config.dropout)
        self.stride = config.stride

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        x = features.float()
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = x * mask.unsqueeze(-1).to(x.dtype)
            # back to [B, T, H] in memory: GELU's backward is ~6x slower on a transposed view
            x = conv(x.transpose(1, 2)).transpose(1, 2).contiguous()
            mask = mask[:, :: self.stride][:, : x.shape[1]]
            x = self.dropout(norm(nn.functional.gelu(x)))
        x = x * mask.unsqueeze(-1).to(x.dtype)
        return Encoded(sequence=x, mask=mask, pooled=masked_mean(x, mask))


class MLPEncoder(nn.Module):
    """The same MLP on every frame (Linear -> GELU -> dropout), then masked mean pooling;
    meant for one-frame utterance-level features."""

    def __init__(self, input_dim: int, config: AudioEncoderConfig):
        super().__init__()
        self.dim = config.hidden
        layers: list[nn.Module] = []
        for i in range(config.layers):
            layers += [nn.Linear(input_dim if i == 0 else config.hidden, config.hidden),
                       nn.GELU(), nn.Dropout(config.dropout)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        x = self.mlp(features.float()) * mask.unsqueeze(-1).float()
        return Encoded(sequence=x, mask=mask, pooled=masked_mean(x, mask))


class AttentionPoolEncoder(nn.Module):
    """A per-frame projection MLP, then attention pooling: a learned score per frame,
    softmax over the real frames, weighted sum."""

    def __init__(self, input_dim: int, config: AudioEncoderConfig):
        super().__init__()
        self.project = MLPEncoder(input_dim, config).mlp
        self.dim = config.hidden
        self.score = nn.Linear(config.hidden, 1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        x = self.project(features.float()) * mask.unsqueeze(-1).float()
        scores = self.score(x).squeeze(-1)  # bf16/fp16 under autocast: fill with its min
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=1).unsqueeze(-1)
        return Encoded(sequence=x, mask=mask, pooled=(weights * x).sum(1))


class TrainingStandardizer(nn.Module):
    """Standardises each feature with the mean and std of the real frames it was trained on.

    In training mode the frames of every batch are added to running float64 sums and the
    batch is standardised with the statistics so far; in eval mode the sums are frozen.
    After whole epochs (when emoplug evaluates), the statistics are exactly the training
    fold's: every epoch adds the same frames again. The sums are buffers: saved and
    restored with the model's weights."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("squares", torch.zeros(dim, dtype=torch.float64))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                real = features[mask].double()
                self.count += real.shape[0]
                self.total += real.sum(0)
                self.squares += (real * real).sum(0)
        count = self.count.clamp(min=1.0)
        mean = self.total / count
        var = (self.squares / count - mean * mean).clamp(min=0.0)
        scaled = (features.double() - mean) / (var + self.eps).sqrt()
        return scaled.to(features.dtype)


class LinearEncoder(nn.Module):
    """The classic baseline's front end: :class:`TrainingStandardizer`, one linear layer on
    every frame, masked mean pooling (meant for one-frame functionals, where the whole model
    with a linear head is a linear classifier on standardised statistics)."""

    def __init__(self, input_dim: int, config: AudioEncoderConfig):
        super().__init__()
        self.dim = config.hidden
        self.standardize = TrainingStandardizer(input_dim)
        self.linear = nn.Linear(input_dim, config.hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        x = self.dropout(self.linear(self.standardize(features.float(), mask)))
        x = x * mask.unsqueeze(-1).to(x.dtype)
        return Encoded(sequence=x, mask=mask, pooled=masked_mean(x, mask))


class MixedLayersEncoder(nn.Module):
    """:class:`LayerMix` in front of another encoder (stacked wav2vec layers)."""

    def __init__(self, n_layers: int, encoder: nn.Module):
        super().__init__()
        self.mix = LayerMix(n_layers)
        self.encoder = encoder
        self.dim = encoder.dim

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        return self.encoder(self.mix(features.float()), mask)


ENCODERS: dict[str, type[nn.Module]] = {
    "cnn": CNNEncoder, "mlp": MLPEncoder, "attention_pool": AttentionPoolEncoder,
    "linear": LinearEncoder}


def make_encoder(config: AudioEncoderConfig, input_dim: int, n_layers: int = 1) -> nn.Module:
    """The encoder ``config.type`` names; see :func:`emoplug.audio_encoders.build_audio_encoder`."""
    if n_layers == 1:
        return ENCODERS[config.type](input_dim, config)
    return MixedLayersEncoder(n_layers, ENCODERS[config.type](input_dim // n_layers, config))
