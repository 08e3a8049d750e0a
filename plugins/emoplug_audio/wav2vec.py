"""wav2vec featurizer: hidden states of a frozen self-supervised speech model
(wav2vec 2.0, HuBERT, WavLM, ... anything ``transformers.AutoModel`` loads that takes a raw
waveform), at the frame or pooled level (:mod:`emoplug_audio.speech`).

Each waveform is normalised to zero mean and unit variance when the checkpoint's feature
extractor says so (or ships none). A batch is zero-padded with an attention mask, and each
utterance keeps only its own frames, when the model's front end allows it; a front end with
group normalisation (``feat_extract_norm: group``: wav2vec2-base, HuBERT-base,
WavLM-base-plus) normalises over time, so padding would change every frame: those models
run each utterance alone, unpadded.

With ``mode: finetune`` the model is instead trained end to end inside every cell, from
waveforms (:mod:`emoplug_audio.speech_model`); with ``mode: staged`` it is fine-tuned once
per fold and seed and its features reused (:mod:`emoplug.train.audio_stage`). Both train the
frame level.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from emoplug import SettingError, build_audio_encoder
from emoplug_audio.speech import SpeechEncoder, SpeechEncoderConfig, offline

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn


class Wav2Vec(SpeechEncoder):
    """``frames``: ``[frames, L * H]`` at the model's frame rate (50 Hz) / ``downsample``;
    ``pooled``: ``[1, L * S * H]``; float16."""

    name: ClassVar[str] = "wav2vec"
    version: ClassVar[str] = "1"
    training_settings: ClassVar[frozenset[str]] = frozenset({
        "mode", "freeze_feature_encoder", "encoder_lr", "gradient_checkpointing",
        "stage_objective"})

    class Config(SpeechEncoderConfig):
        pretrained: str = Field("facebook/wav2vec2-base",
                                description="hub name or local directory of the checkpoint")
        mode: Literal["frozen", "finetune", "staged"] = Field(
            "frozen", description="frozen: features of the pretrained model, cached once; "
            "finetune: the model trained end to end from waveforms in every job; staged: "
            "fine-tuned once per fold and seed with a speech-only head, then its features "
            "reused by every cell of that fold and seed")
        freeze_feature_encoder: bool = Field(
            True, description="finetune/staged: keep the convolutional front end frozen")
        encoder_lr: float | None = Field(
            None, gt=0, description="finetune/staged: learning rate of the speech model; "
            "default train.encoder_lr")
        gradient_checkpointing: bool = Field(
            False, description="finetune/staged: recompute the transformer layers' "
            "activations in the backward pass (less memory, more time)")
        stage_objective: Literal["multitask", "category", "avd"] = Field(
            "multitask", description="staged: what the speech-only head of the per-fold "
            "fine-tuning is trained on")

        @model_validator(mode="after")
        def _trained_at_the_frame_level(self) -> Wav2Vec.Config:
            if self.mode != "frozen" and self.level != "frames":
                raise ValueError(f"mode: {self.mode} trains the frame level; level: pooled "
                                 "is for frozen features")
            return self

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._normalize = True
        self._prepare: tuple[bool, int] | None = None

    def check(self) -> list[SettingError]:
        """A ``pretrained`` checkpoint that is not there; for ``mode: finetune``/``staged``,
        one whose model has no convolutional front end to train from waveforms."""
        problems = super().check()
        if not problems and self.config.mode != "frozen":
            from transformers import AutoConfig

            try:
                model_config = self.from_pretrained(AutoConfig)
            except (SettingError, OSError, ValueError):
                return []  # found when the model loads
            if not hasattr(model_config, "conv_kernel"):
                problems = [self._not_trainable(model_config.model_type)]
        return problems

    def _not_trainable(self, model_type: str) -> SettingError:
        return SettingError("mode", f"{self.config.mode} trains a wav2vec 2.0-style model "
                            "(wav2vec 2.0, HuBERT, WavLM, data2vec-audio); "
                            f"{self.config.pretrained} is a {model_type}")

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


    # -- training the model (mode: finetune, staged) ---------------------------------------
    def prepare_waveform(self, waveform: np.ndarray) -> np.ndarray:
        """The model's input for one utterance when it trains (``mode: finetune``/``staged``):
        normalised as its feature extractor does, padded to one frame's receptive field."""
        import numpy as np

        normalize, field = self._waveform_settings()
        y = waveform.astype(np.float32)
        if normalize:
            y = (y - y.mean()) / np.sqrt(y.var() + 1e-7)
        return np.pad(y, (0, max(0, field - len(y))))

    def _waveform_settings(self) -> tuple[bool, int]:
        """(whether the feature extractor normalises each utterance, the receptive field in
        samples), read once from the checkpoint's files."""
        if self._prepare is None:
            from transformers import AutoConfig, AutoFeatureExtractor

            try:
                extractor = AutoFeatureExtractor.from_pretrained(
                    self.config.pretrained, local_files_only=offline())
                normalize = bool(getattr(extractor, "do_normalize", True))
            except (OSError, ValueError):
                normalize = True  # no preprocessor config: wav2vec 2.0's default
            self._prepare = (normalize, _receptive_field(self.from_pretrained(AutoConfig)))
        return self._prepare

    def build_waveform_encoder(self) -> nn.Module:
        """A fresh copy of the pretrained model with the cell's encoder on top, trained end
        to end (:class:`emoplug_audio.speech_model.SpeechModelEncoder`)."""
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        from emoplug_audio.speech_model import SpeechModelEncoder

        hf_logging.disable_progress_bar()  # one bar per job would drown the run's own
        speech = self.from_pretrained(AutoModel)
        if not hasattr(speech, "feature_extractor") or \
                not hasattr(speech, "_get_feat_extract_output_lengths"):
            raise self._not_trainable(speech.config.model_type)
        layers = self.model_layers()
        head = build_audio_encoder(self.config.encoder, len(layers) * speech.config.hidden_size,
                                   n_layers=len(layers))
        # models whose front end normalises with layer norm take an attention mask (their
        # feature extractor returns one); group-norm models expect zero padding alone
        masked = getattr(speech.config, "feat_extract_norm", "layer") == "layer"
        return SpeechModelEncoder(
            speech.train(), head, layers=layers, downsample=self.config.downsample,
            freeze_feature_encoder=self.config.freeze_feature_encoder,
            gradient_checkpointing=self.config.gradient_checkpointing, attention_mask=masked)

    def save_waveform_encoder(self, module: nn.Module, folder: Path) -> None:
        """The fine-tuned model as a checkpoint folder (``config.json``,
        ``model.safetensors``) with the feature extractor's settings when the checkpoint
        has them (``preprocessor_config.json``)."""
        import safetensors.torch
        from transformers import AutoFeatureExtractor

        # written by hand: save_pretrained writes nothing on the non-zero ranks of a launch
        module.speech.config.save_pretrained(folder)
        safetensors.torch.save_model(module.speech, str(folder / "model.safetensors"),
                                     metadata={"format": "pt"})
        try:
            extractor = AutoFeatureExtractor.from_pretrained(self.config.pretrained,
                                                             local_files_only=offline())
        except (OSError, ValueError):
            return  # none: wav2vec 2.0's default normalisation, as in training
        (folder / "preprocessor_config.json").write_text(extractor.to_json_string())

    def saved_featurizer(self, folder: Path) -> Wav2Vec:
        return type(self)(self.config.model_copy(update={"pretrained": str(folder)}))

def _receptive_field(config: Any) -> int:
    """Samples the model's convolutional front end needs for one output frame."""
    field, jump = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field
