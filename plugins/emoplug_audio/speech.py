"""The shared base of the speech-encoder featurizers (``wav2vec``, ``whisper``): a frozen
pretrained model's hidden states at two levels.

- ``level: frames``: the selected layers concatenated per frame, ``[frames, L * H]``.
- ``level: pooled``: per-layer statistics over the utterance's real frames (mean, or mean
  then std), one row ``[1, L * S * H]`` laid out layer by layer (``S`` = 1 or 2), so the
  learned softmax layer mix (:class:`emoplug.audio_nn.LayerMix`) weights a layer's mean and
  std together. It is what pooling the frame level over time gives, in a few kB per file.

Both are float16. A subclass loads its model and turns a batch of waveforms into per-layer
hidden states of each utterance's real frames (:meth:`SpeechEncoder.hidden_states`); this
base selects layers, pools, downsamples, estimates the cache size and builds the encoder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from emoplug import (
    AudioEncoderConfig,
    CacheLayout,
    EmoplugError,
    SettingError,
    build_audio_encoder,
    checkpoints,
)
from emoplug_audio.base import Featurizer, FeaturizerConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import torch
    from torch import nn


#: the encoder each level gets when the recipe names none
DEFAULT_ENCODERS = {
    "frames": {"type": "attention_pool", "hidden": 256, "layers": 1},
    "pooled": {"type": "mlp", "hidden": 256, "layers": 1},
}


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("", "0", "false", "no")


class SpeechEncoderConfig(FeaturizerConfig):
    """Settings every speech-encoder featurizer has (``pretrained`` is the subclass's)."""

    pretrained: str
    layers: tuple[int, ...] | Literal["all"] = Field(
        (4, 8, 12), description="hidden-state layers (0 = the input embedding) or all; "
        "indices past the model's depth become its last layer")
    level: Literal["frames", "pooled"] = Field(
        "frames", description="frames: every frame of every selected layer; pooled: "
        "per-layer statistics over the utterance, one row")
    statistics: Literal["mean", "mean_std"] = Field(
        "mean", description="pooled: the mean of each layer, or its mean then its std")
    downsample: int = Field(1, ge=1, description="frames: average every N frames into one")
    batch_size: int = Field(8, ge=1, description="utterances per forward pass while "
                            "filling the cache (does not change the features)")
    encoder: AudioEncoderConfig = AudioEncoderConfig(**DEFAULT_ENCODERS["frames"])

    @field_validator("layers")
    @classmethod
    def _non_negative(cls, value: Any) -> Any:
        if value != "all" and (not value or min(value) < 0):
            raise ValueError(f"layers must be 'all' or indices >= 0, got {list(value)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _level_encoder(cls, data: Any) -> Any:
        if isinstance(data, dict) and "encoder" not in data:
            return {**data, "encoder": DEFAULT_ENCODERS[data.get("level", "frames")]}
        return data

    @model_validator(mode="after")
    def _level_settings(self) -> SpeechEncoderConfig:
        if self.level == "frames" and self.statistics != "mean":
            raise ValueError("statistics applies to level: pooled only")
        if self.level == "pooled" and self.downsample != 1:
            raise ValueError("downsample applies to level: frames only")
        return self


class SpeechEncoder(Featurizer):
    """Base of the speech-encoder featurizers. The model is loaded lazily, once per
    instance, in eval mode without gradients, on the GPU when there is one."""

    Config: ClassVar[type[SpeechEncoderConfig]] = SpeechEncoderConfig

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._model: Any = None
        self._layers: list[int] | None = None

    # -- what a subclass provides --------------------------------------------------------
    def load_model(self) -> Any:
        """The frozen model (eval mode, on its device), plus whatever preprocessing state
        the subclass keeps."""
        raise NotImplementedError

    def hidden_states(self, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per utterance, ``[layers + 1, frames, H]`` float32 over its real frames only."""
        raise NotImplementedError

    def depth_and_width(self, config: dict[str, Any]) -> tuple[int, int]:
        """(transformer layers, hidden size) from the checkpoint's ``config.json``."""
        raise NotImplementedError

    def frames_per_second(self, config: dict[str, Any]) -> float:
        """Output frames per second of audio, from the checkpoint's ``config.json``."""
        raise NotImplementedError

    # -- loading -------------------------------------------------------------------------
    def from_pretrained(self, loader: Any) -> Any:
        """``loader.from_pretrained(pretrained)``; a checkpoint that is not there is one
        :class:`SettingError` line."""
        name = self.config.pretrained
        try:
            return loader.from_pretrained(name, local_files_only=offline())
        except OSError as exc:
            if os.path.isdir(name):
                raise SettingError("pretrained", f"cannot load the checkpoint in {name}: "
                                                 f"{exc}") from exc
            raise checkpoints.not_cached(name) from exc

    def check(self) -> list[SettingError]:
        """A ``pretrained`` checkpoint that is not there."""
        problem = checkpoints.checkpoint_problem(self.config.pretrained)
        return [] if problem is None else [problem]

    def model(self) -> Any:
        if self._model is None:
            self._model = self.load_model()
        return self._model

    def checkpoint_config(self, filename: str = "config.json") -> dict[str, Any]:
        """A JSON file of the checkpoint (``config.json``, ``preprocessor_config.json``) as
        a dict, without loading the model: from its directory, the local Hugging Face cache
        or, when the hub is reachable, the hub. A ``config.json`` that cannot be had is a
        :class:`SettingError`; another file that is not there is an empty dict."""
        source = self.config.pretrained
        local = Path(source).expanduser()
        if local.is_dir() or checkpoints.looks_like_path(source):
            path: Path | str | None = local / filename if (local / filename).is_file() else None
        else:
            path = self._hub_file(source, filename)
        if path is None:
            if filename != "config.json":
                return {}
            raise (checkpoints.checkpoint_problem(source)
                   or SettingError("pretrained", f"{source} has no {filename}"))
        return json.loads(Path(path).read_text())

    @staticmethod
    def _hub_file(name: str, filename: str) -> str | None:
        """The local path of a hub checkpoint's file, downloaded when it is not cached and
        the hub is reachable; None when it cannot be had."""
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, filename)
            if isinstance(cached, str):
                return cached
            if checkpoints.checkpoint_problem(name) is not None:
                return None  # not cached, and the hub is off or unreachable
            return hf_hub_download(name, filename)
        except (OSError, ValueError):  # no such file or repository, a bad name
            return None

    def geometry(self) -> tuple[int, int, float]:
        """(transformer layers, hidden size, frames per second) from the checkpoint's
        config files; one :class:`SettingError` line when they do not say."""
        config = self.checkpoint_config()
        try:
            return (*self.depth_and_width(config), self.frames_per_second(config))
        except (KeyError, TypeError, ValueError) as exc:
            raise SettingError("pretrained", f"the config.json of {self.config.pretrained} "
                               f"does not give the model's shape ({exc!r} missing or "
                               "wrong)") from exc

    def model_layers(self) -> list[int]:
        """The configured layers clipped to the checkpoint's depth (reads its config only)."""
        if self._layers is None:
            depth, _, _ = self.geometry()
            wanted = range(depth + 1) if self.config.layers == "all" else self.config.layers
            self._layers = sorted({min(layer, depth) for layer in wanted})
        return self._layers

    # -- features ------------------------------------------------------------------------
    def batch_size(self) -> int:
        return self.config.batch_size

    def featurize(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.featurize_many([waveform], sample_rate)[0]

    def featurize_many(self, waveforms: Sequence[np.ndarray],
                       sample_rate: int) -> list[np.ndarray]:
        """Features of each waveform at the configured level, float16."""
        layers = self.model_layers()
        out = []
        for states in self.hidden_states(waveforms):
            out.append(self._at_level(states[layers]))  # [L, T, H]
        return out

    def _at_level(self, states: torch.Tensor) -> np.ndarray:
        """``[L, T, H]`` float32 -> the configured level's float16 array."""
        import numpy as np
        import torch

        if self.config.level == "pooled":
            stats = [states.mean(1)]
            if self.config.statistics == "mean_std":
                stats.append(states.std(1, correction=0))
            row = torch.cat(stats, dim=-1).reshape(1, -1)  # layer by layer: [mean, std]
            return np.ascontiguousarray(row.cpu().numpy(), dtype=np.float16)
        frames = states.permute(1, 0, 2).reshape(states.shape[1], -1).cpu().numpy()
        if self.config.downsample > 1:
            starts = np.arange(0, len(frames), self.config.downsample)
            counts = np.diff(np.append(starts, len(frames)))
            frames = np.add.reduceat(frames, starts, axis=0) / counts[:, None]
        return np.ascontiguousarray(frames, dtype=np.float16)

    # -- cache size ----------------------------------------------------------------------
    def cache_layout(self) -> CacheLayout:
        """From the checkpoint's ``config.json``: frames per second, layers and width."""
        _, width, rate = self.geometry()
        n_layers = len(self.model_layers())
        if self.config.level == "pooled":
            per_layer = width * (2 if self.config.statistics == "mean_std" else 1)
            return CacheLayout(0.0, 1.0, n_layers * per_layer, "float16",
                               f"{n_layers} layers x {per_layer}")
        return CacheLayout(rate / self.config.downsample, 0.0, n_layers * width, "float16",
                           f"{n_layers} layers x {width}")

    # -- cache key and encoder -----------------------------------------------------------
    def cache_key(self) -> str:
        """Name + settings (model, layers, level, statistics, ...) + code version, and for a
        local checkpoint directory the digest of its files (a model saved again into the same
        folder is another model); ``encoder``, ``batch_size`` and the ``training_settings``
        (how a fine-tuned model trains) do not change the features."""
        import hashlib

        settings = self.config.model_dump(
            mode="json", exclude={"encoder", "batch_size", *self.training_settings})
        payload = json.dumps([self.name, settings, self.version, self._checkpoint_digest()],
                             sort_keys=True)
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"

    def _checkpoint_digest(self) -> str:
        """Digests of a local checkpoint's config and weights files (each hashed once per
        process); empty for a hub name, whose name says which model it is."""
        from emoplug.data.cache import file_digest

        folder = Path(self.config.pretrained).expanduser()
        if not folder.is_dir():
            return ""
        files = sorted(f for f in folder.iterdir() if f.is_file() and (
            f.suffix in (".safetensors", ".bin") or f.name.endswith("config.json")))
        return ",".join(f"{f.name}:{file_digest(f)}" for f in files)

    def build_encoder(self, input_dim: int) -> nn.Module:
        n_layers = len(self.model_layers())
        if input_dim % n_layers:
            raise EmoplugError(f"{self.name} features of dim {input_dim} do not split into "
                               f"{n_layers} layers; clear the feature cache for {self.name}")
        return build_audio_encoder(self.config.encoder, input_dim, n_layers=n_layers)

