"""wav2vec featurizer: hidden states of a frozen self-supervised speech model
(wav2vec 2.0, HuBERT, WavLM, ... anything ``transformers.AutoModel`` loads that takes a raw
waveform), at the frame or pooled level (:mod:`emoplug_audio.speech`).

Each waveform is normalised to zero mean and unit variance when the checkpoint's feature
extractor says so (or ships none). A batch is zero-padded with an attention mask, and each
utterance keeps only its own frames, when the model's front end allows it; a front end with
group normalisation (``feat_extract_norm: group``: wav2vec2-base, HuBERT-base,
WavLM-base-plus) normalises over time, so padding would change every frame: those models
run each utterance alone, unpadded.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from emoplug import SettingError
from emoplug_audio.speech import SpeechEncoder, SpeechEncoderConfig, offline

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import torch


class Wav2Vec(SpeechEncoder):
    """``frames``: ``[frames, L * H]`` at the model's frame rate (50 Hz) / ``downsample``;
    ``pooled``: ``[1, L * S * H]``; float16."""

    name: ClassVar[str] = "wav2vec"
    version: ClassVar[str] = "1"

    class Config(SpeechEncoderConfig):
        pretrained: str = Field("facebook/wav2vec2-base",
                                description="hub name or local directory of the checkpoint")

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._normalize = True

    # -- loading -------------------------------------------------------------------------
    def load_model(self) -> Any:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        model = self.from_pretrained(AutoModel)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            extractor = AutoFeatureExtractor.from_pretrained(
                self.config.pretrained, local_files_only=offline())
            self._normalize = bool(getattr(extractor, "do_normalize", True))
        except (OSError, ValueError):
            self._normalize = True  # no preprocessor config: wav2vec 2.0's default
        return model.to(device).eval().requires_grad_(False)

    def depth_and_width(self, config: dict[str, Any]) -> tuple[int, int]:
        if config.get("is_encoder_decoder"):
            raise SettingError("pretrained", f"{self.config.pretrained} is an encoder-decoder "
                               f"model ({config.get('model_type')}); use type: whisper")
        return int(config["num_hidden_layers"]), int(config["hidden_size"])

    def frames_per_second(self, config: dict[str, Any]) -> float:
        return self.config.sample_rate / math.prod(config["conv_stride"])

    # -- hidden states -------------------------------------------------------------------
    def hidden_states(self, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        model = self.model()
        if len(waveforms) > 1 and getattr(model.config, "feat_extract_norm", "") == "layer":
            return self._batched(model, [self._input(y, model) for y in waveforms])
        return [self._batched(model, [self._input(y, model)])[0] for y in waveforms]

    def _input(self, waveform: np.ndarray, model: Any) -> np.ndarray:
        """The waveform normalised as the checkpoint expects and zero-padded to at least one
        output frame's receptive field."""
        import numpy as np

        y = waveform.astype(np.float32)
        if self._normalize:
            y = (y - y.mean()) / np.sqrt(y.var() + 1e-7)
        return np.pad(y, (0, max(0, _receptive_field(model.config) - len(y))))

    def _batched(self, model: Any, inputs: list[np.ndarray]) -> list[torch.Tensor]:
        """One forward pass over zero-padded ``inputs`` with an attention mask (none for one
        input); per input ``[layers + 1, frames, H]`` over its own frames."""
        import numpy as np
        import torch

        device = next(model.parameters()).device
        lengths = torch.tensor([len(y) for y in inputs])
        batch = np.zeros((len(inputs), int(lengths.max())), np.float32)
        for i, y in enumerate(inputs):
            batch[i, :len(y)] = y
        mask = (torch.arange(batch.shape[1])[None] < lengths[:, None]).long()
        with torch.inference_mode(), warnings.catch_warnings():
            # WavLM's attention mixes a float bias with a boolean padding mask (harmless)
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            out = model(torch.from_numpy(batch).to(device), output_hidden_states=True,
                        attention_mask=mask.to(device) if len(inputs) > 1 else None)
        states = torch.stack(out.hidden_states).float().cpu()  # [layers + 1, B, T, H]
        frames = model._get_feat_extract_output_lengths(lengths)
        return [states[:, i, :int(n)] for i, n in enumerate(frames)]


def _receptive_field(config: Any) -> int:
    """Samples the model's convolutional front end needs for one output frame."""
    field, jump = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field
