"""The ``whisper`` speech recogniser: transcripts from transformers' automatic-speech-recognition
pipeline, for text encoders with ``source: asr`` (see docs/text-encoders.md).

Light to import: transformers is imported when the first batch is transcribed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from emoplug import ComponentConfig, SettingError, SpeechRecogniser
from emoplug.checkpoints import checkpoint_problem

if TYPE_CHECKING:
    import numpy as np


class WhisperConfig(ComponentConfig):
    """Settings of the whisper speech recogniser; every one is part of the transcripts'
    cache key."""

    pretrained: str = Field("openai/whisper-small",
                            description="a Whisper checkpoint: hub name or local directory")
    language: str | None = Field(
        None, description="the spoken language (en, english, de...); null: Whisper detects it "
                          "per utterance")
    task: Literal["transcribe", "translate"] = Field(
        "transcribe", description="transcribe, or translate into English")
    num_beams: int = Field(1, ge=1, description="beam width of decoding (1 = greedy)")
    max_new_tokens: int = Field(128, ge=1, le=440, description="most tokens per transcript")
    batch_size: int = Field(8, ge=1, description="utterances decoded together")


class Whisper(SpeechRecogniser):
    """OpenAI's Whisper (default ``openai/whisper-small``) through the transformers
    ``automatic-speech-recognition`` pipeline, on the GPU when there is one."""

    name: ClassVar[str] = "whisper"
    Config: ClassVar[type[WhisperConfig]] = WhisperConfig
    config: WhisperConfig

    def __init__(self, config: WhisperConfig | None = None):
        super().__init__(config)
        self._pipeline: Any = None

    def check(self) -> list[SettingError]:
        """A ``pretrained`` checkpoint that is not there; a ``language`` Whisper does not
        know."""
        problems = [checkpoint_problem(self.config.pretrained), self._language_problem()]
        return [p for p in problems if p is not None]

    def _language_problem(self) -> SettingError | None:
        """Whisper takes a language code (``en``), name (``english``) or token (``<|en|>``)."""
        if self.config.language is None:
            return None
        from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

        language = self.config.language.lower()
        if language in TO_LANGUAGE_CODE or language.strip("<|>") in TO_LANGUAGE_CODE.values():
            return None
        return SettingError("language", f"{self.config.language!r} is not a language Whisper "
                                        "knows; give its code (en, de, ...) or name (english, "
                                        "german, ...)")

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        cfg = self.config
        generate = {"task": cfg.task, "num_beams": cfg.num_beams,
                    "max_new_tokens": cfg.max_new_tokens}
        if cfg.language is not None:
            generate["language"] = cfg.language
        # the pipeline consumes the dicts it is given: fresh ones each call
        inputs = [{"raw": wave, "sampling_rate": self.sample_rate} for wave in waveforms]
        recognise = self._load()
        from transformers.utils import logging as hf_logging

        before = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # per-batch notes on generation arguments
        try:
            # audio longer than Whisper's window (30 s) is cut into overlapping windows whose
            # texts are joined (the pipeline's chunked long-form), so it batches with the rest
            outputs = recognise(inputs, batch_size=cfg.batch_size, generate_kwargs=generate,
                                chunk_length_s=recognise.feature_extractor.chunk_length)
        finally:
            hf_logging.set_verbosity(before)
        return [str(out["text"]).strip() for out in outputs]

    def _load(self) -> Any:
        """The pipeline, loaded on first use; problems are ``pretrained`` setting errors."""
        if self._pipeline is None:
            import torch
            from transformers import pipeline
            from transformers.utils import logging as hf_logging

            problem = checkpoint_problem(self.config.pretrained)
            if problem is not None:
                raise problem
            hf_logging.disable_progress_bar()
            try:
                self._pipeline = pipeline(
                    "automatic-speech-recognition", model=self.config.pretrained,
                    device="cuda" if torch.cuda.is_available() else "cpu",  # this process's
                    ignore_warning=True)
            except (OSError, ValueError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise SettingError("pretrained", f"{self.config.pretrained} is not a usable "
                                                 f"Whisper checkpoint ({first})") from None
        return self._pipeline
