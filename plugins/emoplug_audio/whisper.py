"""whisper featurizer: hidden states of a frozen Whisper encoder (the decoder is not used),
at the frame or pooled level (:mod:`emoplug_audio.speech`).

Input is the log-mel spectrogram of the checkpoint's own feature extractor
(``WhisperFeatureExtractor``: 80 or 128 mel bands, 10 ms hop, log-compressed and scaled).
Whisper's encoder accepts only its full window (30 s, 3,000 mel frames; its position
embeddings and attention have no mask), so every utterance is zero-padded to 30 s as in
Whisper's training, and the output is **trimmed to the utterance's real frames**:
``ceil(samples / 320)`` at 50 Hz. An utterance longer than the window is cut into 30 s
pieces, each padded and trimmed, then joined. The padding is paid in compute: a 5 s
utterance costs what 30 s does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from emoplug import CacheLayout, SettingError
from emoplug_audio.speech import SpeechEncoder, SpeechEncoderConfig, offline

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import torch


#: Whisper's encoder halves the mel frame rate (conv2 has stride 2)
ENCODER_STRIDE = 2


class Whisper(SpeechEncoder):
    """``frames``: ``[frames, L * H]`` at 50 Hz (the real frames only) / ``downsample``;
    ``pooled``: ``[1, L * S * H]``; float16."""

    name: ClassVar[str] = "whisper"
    version: ClassVar[str] = "1"

    class Config(SpeechEncoderConfig):
        pretrained: str = Field("openai/whisper-base",
                                description="hub name or local directory of the checkpoint")
        layers: tuple[int, ...] | Literal["all"] = Field(
            "all", description="hidden-state layers (0 = the input embedding; the last is "
            "after the encoder's final layer norm) or all")

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._extractor: Any = None

    # -- loading -------------------------------------------------------------------------
    def load_model(self) -> Any:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        name = self.config.pretrained
        model = self.from_pretrained(AutoModel)
        try:
            extractor = AutoFeatureExtractor.from_pretrained(name, local_files_only=offline())
        except (OSError, ValueError) as exc:
            raise SettingError("pretrained", f"{name} has no usable feature extractor "
                               f"(preprocessor_config.json): {exc}") from exc
        if extractor.sampling_rate != self.config.sample_rate:
            raise SettingError("sample_rate", f"{name} expects {extractor.sampling_rate} Hz "
                               f"audio, not {self.config.sample_rate}")
        self._extractor = extractor
        encoder = model.get_encoder()  # the decoder is dropped with the rest of ``model``
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return encoder.to(device).eval().requires_grad_(False)

    def depth_and_width(self, config: dict[str, Any]) -> tuple[int, int]:
        if config.get("model_type") != "whisper":
            raise SettingError("pretrained", f"{self.config.pretrained} is a "
                               f"{config.get('model_type')} model, not Whisper; use type: "
                               "wav2vec for waveform encoders")
        return int(config["encoder_layers"]), int(config["d_model"])

    def frames_per_second(self, config: dict[str, Any]) -> float:
        hop = self.checkpoint_config("preprocessor_config.json").get("hop_length", 160)
        return self.config.sample_rate / (hop * ENCODER_STRIDE)

    def cache_layout(self) -> CacheLayout:
        """As the base's; frames: half a frame more per file (each piece's real frames are
        rounded up)."""
        import dataclasses

        layout = super().cache_layout()
        if self.config.level == "frames":
            layout = dataclasses.replace(layout, rows_per_file=0.5 / self.config.downsample)
        return layout

    # -- hidden states -------------------------------------------------------------------
    def hidden_states(self, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Every utterance cut into windows, the windows encoded ``batch_size`` at a time,
        each trimmed to its real frames, an utterance's pieces joined in order."""
        import torch

        model = self.model()
        window = self._extractor.n_samples
        pieces = [(i, y[start:start + window]) for i, y in enumerate(waveforms)
                  for start in range(0, max(len(y), 1), window)]
        encoded: list[torch.Tensor] = []
        for at in range(0, len(pieces), self.config.batch_size):
            encoded += self._encode([y for _, y in pieces[at:at + self.config.batch_size]],
                                    model)
        per_utterance: list[list[torch.Tensor]] = [[] for _ in waveforms]
        for (i, _), states in zip(pieces, encoded, strict=True):
            per_utterance[i].append(states)
        return [torch.cat(parts, dim=1) for parts in per_utterance]

    def real_frames(self, samples: int) -> int:
        """Encoder frames covering ``samples`` of audio inside one window."""
        stride = self._extractor.hop_length * ENCODER_STRIDE
        return max(1, -(-samples // stride))

    def _encode(self, windows: list[np.ndarray], model: Any) -> list[torch.Tensor]:
        """Windows of at most 30 s, each padded to 30 s by the feature extractor, in one
        forward pass; per window ``[layers + 1, real frames, H]``."""
        import numpy as np
        import torch

        parameter = next(model.parameters())
        inputs = self._extractor([np.asarray(y, dtype=np.float32) for y in windows],
                                 sampling_rate=self.config.sample_rate, return_tensors="pt",
                                 padding="max_length", device=str(parameter.device))
        features = inputs["input_features"].to(parameter.device, parameter.dtype)
        with torch.inference_mode():
            out = model(features, output_hidden_states=True)
        states = torch.stack(out.hidden_states).float().cpu()  # [layers + 1, B, 1500, H]
        return [states[:, i, :self.real_frames(len(y))] for i, y in enumerate(windows)]
