"""wav2vec featurizer: hidden states of a frozen self-supervised speech model
(wav2vec 2.0, HuBERT, WavLM, ... anything ``transformers.AutoModel`` loads).

Selected layers are concatenated per frame (``[frames, n_layers * hidden]``, float16); the
encoder mixes them back with learned softmax weights. Each utterance runs unpadded, alone.
With ``mode: finetune`` the model is instead trained end to end inside every cell, from
waveforms (:mod:`emoplug_audio.speech_model`); with ``mode: staged`` it is fine-tuned once
per fold and seed and its features reused (:mod:`emoplug.train.audio_stage`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from emoplug import (
    AudioEncoderConfig,
    EmoplugError,
    SettingError,
    build_audio_encoder,
    checkpoints,
)
from emoplug_audio.base import Featurizer, FeaturizerConfig

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from torch import nn


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("", "0", "false", "no")


class Wav2Vec(Featurizer):
    """``[frames, n_layers * hidden]`` float16 at the model's frame rate / ``downsample``."""

    name: ClassVar[str] = "wav2vec"
    version: ClassVar[str] = "1"
    training_settings: ClassVar[frozenset[str]] = frozenset({
        "mode", "freeze_feature_encoder", "encoder_lr", "gradient_checkpointing",
        "stage_objective"})

    class Config(FeaturizerConfig):
        pretrained: str = Field("facebook/wav2vec2-base",
                                description="hub name or local directory of the checkpoint")
        layers: tuple[int, ...] = Field(
            (4, 8, 12), min_length=1, description="hidden-state layers (0 = the conv "
            "front end's projection); indices past the model's depth become its last layer")
        downsample: int = Field(1, ge=1, description="average every N frames into one")
        encoder: AudioEncoderConfig = AudioEncoderConfig(type="attention_pool", hidden=256,
                                                         layers=1)
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

        @field_validator("layers")
        @classmethod
        def _non_negative(cls, value: tuple[int, ...]) -> tuple[int, ...]:
            if min(value) < 0:
                raise ValueError(f"layers must be >= 0, got {list(value)}")
            return value

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._model: Any = None
        self._normalize = True
        self._layers: list[int] | None = None
        self._prepare: tuple[bool, int] | None = None

    # -- loading -------------------------------------------------------------------------
    def _from_pretrained(self, loader: Any) -> Any:
        name = self.config.pretrained
        try:
            return loader.from_pretrained(name, local_files_only=_offline())
        except OSError as exc:
            if os.path.isdir(name):
                raise SettingError("pretrained", f"cannot load the checkpoint in {name}: "
                                                 f"{exc}") from exc
            raise checkpoints.not_cached(name) from exc

    def check(self) -> list[SettingError]:
        """A ``pretrained`` checkpoint that is not there; for ``mode: finetune``/``staged``,
        one whose model has no convolutional front end to train from waveforms."""
        problem = checkpoints.checkpoint_problem(self.config.pretrained)
        if problem is None and self.config.mode != "frozen":
            from transformers import AutoConfig

            try:
                model_config = self._from_pretrained(AutoConfig)
            except (SettingError, OSError, ValueError):
                return []  # found when the model loads
            if not hasattr(model_config, "conv_kernel"):
                problem = self._not_trainable(model_config.model_type)
        return [] if problem is None else [problem]

    def _not_trainable(self, model_type: str) -> SettingError:
        return SettingError("mode", f"{self.config.mode} trains a wav2vec 2.0-style model "
                            "(wav2vec 2.0, HuBERT, WavLM, data2vec-audio); "
                            f"{self.config.pretrained} is a {model_type}")

    def model_layers(self) -> list[int]:
        """The configured layers clipped to the checkpoint's depth (reads its config only)."""
        if self._layers is None:
            from transformers import AutoConfig

            depth = self._from_pretrained(AutoConfig).num_hidden_layers
            self._layers = sorted({min(layer, depth) for layer in self.config.layers})
        return self._layers

    def _load(self) -> Any:
        """The model, loaded once per instance: eval mode, on the GPU when there is one."""
        if self._model is None:
            import torch
            from transformers import AutoFeatureExtractor, AutoModel

            model = self._from_pretrained(AutoModel)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = model.to(device).eval().requires_grad_(False)
            try:
                extractor = AutoFeatureExtractor.from_pretrained(
                    self.config.pretrained, local_files_only=_offline())
                self._normalize = bool(getattr(extractor, "do_normalize", True))
            except (OSError, ValueError):
                self._normalize = True  # no preprocessor config: wav2vec 2.0's default
        return self._model

    # -- features ------------------------------------------------------------------------
    def featurize(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        import numpy as np
        import torch

        model = self._load()
        layers = self.model_layers()
        y = waveform.astype(np.float32)
        if self._normalize:
            y = (y - y.mean()) / np.sqrt(y.var() + 1e-7)
        y = np.pad(y, (0, max(0, _receptive_field(model.config) - len(y))))
        device = next(model.parameters()).device
        with torch.inference_mode():
            out = model(torch.from_numpy(y)[None].to(device), output_hidden_states=True)
        states = torch.cat([out.hidden_states[i][0] for i in layers], dim=-1)
        features = states.float().cpu().numpy()
        if self.config.downsample > 1:
            starts = np.arange(0, len(features), self.config.downsample)
            counts = np.diff(np.append(starts, len(features)))
            features = np.add.reduceat(features, starts, axis=0) / counts[:, None]
        return np.ascontiguousarray(features, dtype=np.float16)

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
                    self.config.pretrained, local_files_only=_offline())
                normalize = bool(getattr(extractor, "do_normalize", True))
            except (OSError, ValueError):
                normalize = True  # no preprocessor config: wav2vec 2.0's default
            self._prepare = (normalize,
                             _receptive_field(self._from_pretrained(AutoConfig)))
        return self._prepare

    def build_waveform_encoder(self) -> nn.Module:
        """A fresh copy of the pretrained model with the cell's encoder on top, trained end
        to end (:class:`emoplug_audio.speech_model.SpeechModelEncoder`)."""
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        from emoplug_audio.speech_model import SpeechModelEncoder

        hf_logging.disable_progress_bar()  # one bar per job would drown the run's own
        speech = self._from_pretrained(AutoModel)
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
                                                             local_files_only=_offline())
        except (OSError, ValueError):
            return  # none: wav2vec 2.0's default normalisation, as in training
        (folder / "preprocessor_config.json").write_text(extractor.to_json_string())

    def saved_featurizer(self, folder: Path) -> Wav2Vec:
        return type(self)(self.config.model_copy(update={"pretrained": str(folder)}))

    def build_encoder(self, input_dim: int) -> nn.Module:
        n_layers = len(self.model_layers())
        if input_dim % n_layers:
            raise EmoplugError(f"wav2vec features of dim {input_dim} do not split into "
                               f"{n_layers} layers; clear the feature cache for {self.name}")
        return build_audio_encoder(self.config.encoder, input_dim, n_layers=n_layers)


def _receptive_field(config: Any) -> int:
    """Samples the model's convolutional front end needs for one output frame."""
    field, jump = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field
