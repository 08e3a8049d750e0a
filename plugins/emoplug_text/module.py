"""The trainable text encoder: tokenizer + transformer + pooling, returning ``Encoded``."""

from __future__ import annotations

from collections.abc import Iterator
from operator import attrgetter
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from emoplug import Encoded

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PoolAt = Literal["mean", "first", "last"]


def pool(sequence: torch.Tensor, mask: torch.Tensor, how: PoolAt) -> torch.Tensor:
    """``[B, T, H]`` -> ``[B, H]``: the masked mean, or the first/last real token. Works with
    padding on either side (positions come from the mask)."""
    if how == "mean":
        weights = mask.unsqueeze(-1).to(sequence.dtype)
        return (sequence * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    steps = mask.shape[1]
    positions = torch.arange(steps, device=mask.device).expand_as(mask)
    if how == "first":
        index = torch.where(mask, positions, steps).amin(1).clamp(max=steps - 1)
    else:
        index = torch.where(mask, positions, -1).amax(1).clamp(min=0)
    return sequence[torch.arange(sequence.shape[0], device=mask.device), index]


def freeze_below_top(transformer: nn.Module, layers: str, train_layers: int | None) -> None:
    """Freeze everything but the top ``train_layers`` modules of ``transformer.<layers>``
    (``None``: freeze nothing)."""
    if train_layers is None:
        return
    transformer.requires_grad_(False)
    stack = list(attrgetter(layers)(transformer))
    for layer in stack[max(0, len(stack) - train_layers):]:
        layer.requires_grad_(True)


class TransformerTextModule(nn.Module):
    """``tokenize(texts)`` pads each batch to its longest text (truncating at ``max_length``)
    on the family's side; ``forward(**tokens)`` returns ``Encoded`` with padding zeroed in
    ``sequence`` and ignored by pooling."""

    def __init__(self, transformer: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 pooling: PoolAt, max_length: int, dropout: float, train_layers: int | None,
                 layers: str, token_type_ids: bool):
        super().__init__()
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.token_type_ids = token_type_ids
        self.dropout = nn.Dropout(dropout)
        self.dim = int(transformer.config.hidden_size)
        freeze_below_top(transformer, layers, train_layers)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length,
            return_token_type_ids=self.token_type_ids, return_tensors="pt"))

    def pretrained_parameters(self) -> Iterator[nn.Parameter]:
        """The transformer's parameters (trained with the encoder learning rate); frozen
        ones have ``requires_grad=False``."""
        return self.transformer.parameters()

    def forward(self, **tokens: torch.Tensor) -> Encoded:
        mask = tokens["attention_mask"].bool()
        hidden = self.transformer(**tokens).last_hidden_state
        sequence = self.dropout(hidden) * mask.unsqueeze(-1).to(hidden.dtype)
        return Encoded(sequence=sequence, mask=mask, pooled=pool(sequence, mask, self.pooling))
