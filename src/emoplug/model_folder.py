"""The saved-model folder format, shared by saving (``train/saving.py``), loading
(``predict.py``) and exporting (``export.py``); light to import (no numpy, no torch).

A model folder holds ``model.json`` (kind ``model`` or ``ensemble``, with a
``format_version``), the cell network's weights in ``model.safetensors`` and, for cells with
text, the text encoder in ``text/`` as its component's ``save`` wrote it. Nothing in it is a
pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import emoplug
from emoplug.errors import EmoplugError

#: ``major.minor``; readers refuse a newer major version and accept any minor one.
FORMAT_VERSION = "1.0"
#: the newest ``format_version`` major this emoplug reads
SUPPORTED_MAJOR = 1
MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
TEXT_DIR = "text"
#: a fine-tuned text encoder's weights live in ``text/``, not in ``model.safetensors``
TEXT_MODULE_PREFIX = "text."
#: a fine-tuned speech model (audio ``mode: finetune``) lives in ``audio/``, its weights not
#: in ``model.safetensors``
AUDIO_DIR = "audio"
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})


def read_model_json(folder: Path) -> dict[str, Any]:
    """``model.json`` of ``folder``, checked for a readable ``format_version``."""
    path = folder / MODEL_JSON
    if not folder.is_dir():
        raise EmoplugError(f"model directory {folder} does not exist")
    if not path.is_file():
        raise EmoplugError(f"{folder} is not a saved emoplug model (no {MODEL_JSON})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EmoplugError(f"{path} is not valid JSON ({exc})") from None
    version = str(manifest.get("format_version", "")) if isinstance(manifest, dict) else ""
    major = version.split(".")[0]
    if not major.isdigit():
        raise EmoplugError(f"{path}: missing or invalid format_version {version!r}")
    if int(major) > SUPPORTED_MAJOR:
        raise EmoplugError(f"{folder} has model format {version}, newer than this emoplug "
                           f"{emoplug.__version__} reads ({SUPPORTED_MAJOR}.x); upgrade emoplug")
    return manifest


def refuse_pickles(folder: Path) -> None:
    """No pickle-based file anywhere in the folder, symlinked folders included, and no link
    that leads outside it."""
    root = folder.resolve()
    for here, dirs, files in os.walk(folder, followlinks=True):
        for name in [*dirs, *files]:
            path = Path(here) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise EmoplugError(f"{path}: refusing a link that leaves the model folder")
            if path.suffix.lower() in PICKLE_SUFFIXES:
                raise EmoplugError(f"{path}: refusing to load a pickle-based file (saved "
                                   "models hold only JSON and safetensors)")
