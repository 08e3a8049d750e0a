"""A self-supervised speech model trained end to end: padded waveforms -> ``Encoded``.

The module the ``wav2vec`` featurizer hands out for ``mode: finetune`` (and for the
fine-tuning of ``mode: staged``): the Hugging Face model (wav2vec 2.0, HuBERT, WavLM, ...),
its chosen hidden-state layers stacked per frame exactly as the frozen features are, then the
cell's audio encoder (``encoder:``, which mixes the layers with learned softmax weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from emoplug import Encoded


def enable_checkpointing(model: Any) -> None:
    """Recompute the transformer layers' activations in the backward pass (non-reentrant
    checkpointing, which also gives gradients to layers whose inputs need none)."""
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def downsample_frames(states: torch.Tensor, mask: torch.Tensor, every: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every ``every`` frames into one, over real frames only (as the frozen
    featurizer's ``downsample``: a last, partial group averages what it has)."""
    b, t, d = states.shape
    groups = -(-t // every)
    pad = groups * every - t
    weights = nn.functional.pad(mask.to(states.dtype), (0, pad)).view(b, groups, every, 1)
    padded = nn.functional.pad(states, (0, 0, 0, pad)).view(b, groups, every, d)
    counts = weights.sum(2)
    return (padded * weights).sum(2) / counts.clamp(min=1.0), counts.squeeze(-1) > 0


class SpeechModelEncoder(nn.Module):
    """``forward(waveforms [B, S, 1], mask [B, S]) -> Encoded``.

    ``layers``: hidden-state indices stacked per frame (``[B, F, n_layers * H]``), frames past
    an utterance's end masked; ``downsample``: frames averaged into one; ``head``: the cell's
    audio encoder over those frames. LayerDrop is off. The convolutional front end is frozen unless
    ``freeze_feature_encoder`` is False; ``attention_mask`` passes the samples' mask to the
    model (models whose front end uses layer norm; those with group norm expect zero padding
    and no mask, as their feature extractor says).
    """

    def __init__(self, speech: Any, head: nn.Module, *, layers: list[int], downsample: int,
                 freeze_feature_encoder: bool, gradient_checkpointing: bool,
                 attention_mask: bool):
        super().__init__()
        self.speech = speech
        self.head = head
        self.layers = list(layers)
        self.downsample = downsample
        self.attention_mask = attention_mask
        self.dim = int(head.dim)
        # LayerDrop skips whole layers at random in training, and with them their hidden
        # states: the chosen layers must all run
        speech.config.layerdrop = 0.0
        if freeze_feature_encoder:
            speech.freeze_feature_encoder()
        if gradient_checkpointing:
            enable_checkpointing(speech)

    def pretrained_parameters(self) -> Iterator[nn.Parameter]:
        """The speech model's parameters (trained with the encoder learning rate); the
        frozen front end's have ``requires_grad=False``."""
        return self.speech.parameters()

    def frames(self, waveforms: torch.Tensor, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked layers ``[B, F, n_layers * H]`` (padding zeroed) and their mask."""
        samples = waveforms.squeeze(-1)
        kwargs = {"attention_mask": mask.long()} if self.attention_mask else {}
        out = self.speech(samples, output_hidden_states=True, **kwargs)
        states = torch.cat([out.hidden_states[i] for i in self.layers], dim=-1)
        lengths = self.speech._get_feat_extract_output_lengths(mask.sum(1))
        frame_mask = torch.arange(states.shape[1], device=states.device) < lengths[:, None]
        states = states * frame_mask.unsqueeze(-1).to(states.dtype)
        if self.downsample > 1:
            states, frame_mask = downsample_frames(states, frame_mask, self.downsample)
        return states, frame_mask

    def forward(self, waveforms: torch.Tensor, mask: torch.Tensor) -> Encoded:
        states, frame_mask = self.frames(waveforms, mask)
        return self.head(states, frame_mask)
