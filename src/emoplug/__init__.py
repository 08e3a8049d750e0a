"""emoplug: multimodal (text + speech) emotion recognition experiments from one YAML recipe.

Plugins import only what this module exports: the ``hookimpl`` marker, the component base
classes, the data types they exchange, :func:`stratified_sample` (the label-stratified draw
protocols carve dev sets with), the trainable audio encoders a featurizer may hand out
(``AudioEncoderConfig``, ``build_audio_encoder``), ``CacheLayout`` (what a featurizer writes to
the cache, for ``emoplug plan``'s estimate), ``foldfiles`` (the EmoBox and s3prl
fold-file formats, which the core writes and a protocol plugin may read) and ``checkpoints``
(what a ``pretrained`` setting points at, for components' ``check``).
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("emoplug")

# pretrained directories and hub names; EmoBox / s3prl fold files, read and written
from emoplug import checkpoints, foldfiles  # noqa: E402
from emoplug.audio_encoders import AudioEncoderConfig, build_audio_encoder  # noqa: E402
from emoplug.cache_size import CacheLayout  # noqa: E402
from emoplug.components import (  # noqa: E402
    Approach,
    AudioFeaturizer,
    Component,
    ComponentConfig,
    Dataset,
    Fusion,
    Protocol,
    SpeechRecogniser,
    TextEncoder,
    TextEncoderConfig,
    missing_package,
)
from emoplug.errors import EmoplugError, SettingError  # noqa: E402
from emoplug.splits import stratified_sample  # noqa: E402
from emoplug.types import (  # noqa: E402
    AVD_NAMES,
    MISSING_AUDIO,
    Corpus,
    DatasetInfo,
    Decoded,
    Encoded,
    Fold,
    Targets,
    Utterance,
)

__all__ = [
    "AVD_NAMES",
    "MISSING_AUDIO",
    "Approach",
    "AudioEncoderConfig",
    "AudioFeaturizer",
    "CacheLayout",
    "checkpoints",
    "Component",
    "ComponentConfig",
    "Corpus",
    "Dataset",
    "DatasetInfo",
    "Decoded",
    "EmoplugError",
    "Encoded",
    "Fold",
    "foldfiles",
    "Fusion",
    "Protocol",
    "SettingError",
    "SpeechRecogniser",
    "Targets",
    "TextEncoder",
    "TextEncoderConfig",
    "Utterance",
    "build_audio_encoder",
    "hookimpl",
    "load",
    "stratified_sample",
    "missing_package",
]


def load(model_dir, device: str = "auto"):
    """Load a saved model directory for prediction (see ``emoplug predict``);
    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``, ..."""
    from emoplug.predict import load_model

    return load_model(model_dir, device)
