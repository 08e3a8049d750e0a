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


def floating(features: torch.Tensor) -> torch.Tensor:
    """Features as the encoders compute on them: float16/bfloat16 storage becomes float32;
    float64 stays (a full-batch L-BFGS fit runs the model in double precision)."""
    return features if features.dtype == torch.float64 else features.float()


def frame_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B, T, 1]``: 1 for real frames, 0 for padding, in float32 (float64 for a double
    ``like``), so that multiplying lifts a bf16/fp16 activation under autocast to float32."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return mask.unsqueeze(-1).to(dtype)


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


class TrainingStandardizer(nn.Module):
    """Standardises each feature with the mean and std of the training fold's real frames,
    as scikit-learn's ``StandardScaler``: the statistics are gathered in one calibration
    pass over the training split before the first step (``begin_calibration`` ...
    ``end_calibration``, driven by :func:`emoplug.train.loop.calibrate`), merged batch by
    batch in float64 (Chan et al.'s pairwise update), and a feature whose variance is zero
    up to rounding is scaled by 1, not blown up. The statistics are buffers: saved and
    restored with the model's weights."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(dim, dtype=torch.float64))
        self._m2: torch.Tensor | None = None  # sum of squared deviations while calibrating

    def begin_calibration(self) -> None:
        self.count.zero_()
        self.mean.zero_()
        self._m2 = torch.zeros_like(self.mean)

    def end_calibration(self) -> None:
        assert self._m2 is not None, "end_calibration without begin_calibration"
        n = self.count.clamp(min=1.0)
        var = self._m2 / n
        eps = torch.finfo(torch.float64).eps
        constant = var <= n * eps * var + (n * self.mean * eps) ** 2
        self.scale.copy_(torch.where(constant, torch.ones_like(var), var.sqrt()))
        self._m2 = None

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self._m2 is not None:  # calibrating: gather, pass through unchanged
            with torch.no_grad():
                self._add(features[mask].double())
            return features
        scaled = (features.double() - self.mean) / self.scale
        return scaled.to(features.dtype)

    def _add(self, rows: torch.Tensor) -> None:
        if rows.shape[0] == 0:
            return
        n_b = float(rows.shape[0])
        mean_b = rows.mean(0)
        m2_b = ((rows - mean_b) ** 2).sum(0)
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / total)
        self._m2 += m2_b + delta * delta * (self.count * n_b / total)
        self.count.copy_(total)


def _standardizer(config: AudioEncoderConfig, input_dim: int) -> TrainingStandardizer | None:
    return TrainingStandardizer(input_dim) if config.standardize else None


def _standardized(standardize: TrainingStandardizer | None, features: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    x = floating(features)
    return x if standardize is None else standardize(x, mask)


class CNNEncoder(nn.Module):
    """A stack of masked 1-D convolutions over time (conv -> GELU -> LayerNorm -> dropout),
    then masked mean pooling. A stride > 1 shortens the sequence and its mask."""

    def __init__(self, input_dim: int, config: AudioEncoderConfig):
        super().__init__()
        self.dim = config.hidden
        self.standardize = _standardizer(config, input_dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(input_dim if i == 0 else config.hidden, config.hidden,
                      config.kernel_size, stride=config.stride, padding=config.kernel_size // 2)
            for i in range(config.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(config.hidden) for _ in range(config.layers))
        self.dropout = nn.Dropout(config.dropout)
        self.stride = config.stride

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        x = _standardized(self.standardize, features, mask)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = x * mask.unsqueeze(-1).to(x.dtype)
            # back to [B, T, H] in memory: GELU's backward is ~6x slower on a transposed view
            x = conv(x.transpose(1, 2)).transpose(1, 2).contiguous()
            mask = mask[:, :: self.stride][:, : x.shape[1]]
            x = self.dropout(norm(nn.functional.gelu(x)))
        x = x * mask.unsqueeze(-1).to(x.dtype)
        return Encoded(sequence=x, mask=mask, pooled=masked_mean(x, mask))


def _mlp(input_dim: int, config: AudioEncoderConfig) -> nn.Sequential:
    """``config.layers`` x (Linear -> GELU -> dropout)."""
    layers: list[nn.Module] = []
    for i in range(config.layers):
        layers += [nn.Linear(input_dim if i == 0 else config.hidden, config.hidden),
                   nn.GELU(), nn.Dropout(config.dropout)]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """The same MLP on every frame (Linear -> GELU -> dropout), then masked mean pooling;
    meant for one-frame utterance-level features."""

    def __init__(self, input_dim: int, config: AudioEncoderConfig):
        super().__init__()
        self.dim = config.hidden
        self.standardize = _standardizer(config, input_dim)
        self.mlp = _mlp(input_dim, config)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        x = self.mlp(_standardized(self.standardize, features, mask))
        x = x * frame_weights(mask, x)
        return Encoded(sequence=x, mask=mask, pooled=masked_mean(x, mask))


class AttentionPoolEncoder(nn.Module):
    """A per-frame projection MLP, then attention pooling: a learned score per frame,
    softmax over the real frames, weighted sum."""

    def __init__(self, input_dim: int, config: AudioEncoderConfig):
        super().__init__()
        self.standardize = _standardizer(config, input_dim)
        self.project = _mlp(input_dim, config)
        self.dim = config.hidden
        self.score = nn.Linear(config.hidden, 1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        x = self.project(_standardized(self.standardize, features, mask))
        x = x * frame_weights(mask, x)
        scores = self.score(x).squeeze(-1)  # bf16/fp16 under autocast: fill with its min
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=1).unsqueeze(-1)
        return Encoded(sequence=x, mask=mask, pooled=(weights * x).sum(1))


class LinearEncoder(nn.Module):
    """The classic baseline's front end: the features standardised with the training
    fold's statistics (:class:`TrainingStandardizer`, always on), no trainable layer, masked
    mean pooling. With a linear head (fusion ``none`` with ``hidden: 0``) the whole cell is
    one linear map of standardised utterance statistics: multinomial logistic regression,
    fitted exactly as such with ``train.optimizer: lbfgs``."""

    def __init__(self, input_dim: int, config: AudioEncoderConfig):
        super().__init__()
        self.dim = input_dim
        self.standardize = TrainingStandardizer(input_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        x = self.standardize(floating(features), mask)
        x = x * frame_weights(mask, x)
        return Encoded(sequence=x, mask=mask, pooled=masked_mean(x, mask))


class MixedLayersEncoder(nn.Module):
    """:class:`LayerMix` in front of another encoder (stacked wav2vec layers)."""

    def __init__(self, n_layers: int, encoder: nn.Module):
        super().__init__()
        self.mix = LayerMix(n_layers)
        self.encoder = encoder
        self.dim = encoder.dim

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Encoded:
        return self.encoder(self.mix(floating(features)), mask)


ENCODERS: dict[str, type[nn.Module]] = {
    "cnn": CNNEncoder, "mlp": MLPEncoder, "attention_pool": AttentionPoolEncoder,
    "linear": LinearEncoder}


def make_encoder(config: AudioEncoderConfig, input_dim: int, n_layers: int = 1) -> nn.Module:
    """The encoder ``config.type`` names; see :func:`emoplug.audio_encoders.build_audio_encoder`."""
    if n_layers == 1:
        return ENCODERS[config.type](input_dim, config)
    return MixedLayersEncoder(n_layers, ENCODERS[config.type](input_dim // n_layers, config))
