"""Load a tokenizer + transformer from a local directory or a Hugging Face hub name.

Every source, a user's ``roberta-base``, a local fine-tuned directory or a tiny test model,
goes through the same ``AutoTokenizer`` / ``AutoModel`` ``from_pretrained`` calls. Hub names
are looked up in the local cache first; the network is tried only when the cache misses, the
hub is not switched off (``HF_HUB_OFFLINE=1``) and its host answers a quick connection probe,
so a missing checkpoint is a fast one-line :class:`emoplug.EmoplugError` rather than a ~50 s
hang of download retries and a traceback.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from emoplug import EmoplugError
from emoplug_text.families import Family

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """True when the Hugging Face hub is switched off (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``),
    read now rather than when huggingface_hub was imported."""
    import huggingface_hub

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "")
    return env.strip().lower() in _TRUE or huggingface_hub.is_offline_mode()


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within ``timeout`` seconds
    (assumed true behind an HTTPS proxy, which the probe cannot see through)."""
    import huggingface_hub

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~", "\\")) or source.count("/") > 1


def _from_pretrained(source: str, family: Family, *, local_files_only: bool
                     ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per job would drown the run's own progress
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModel.from_pretrained(
        source, local_files_only=local_files_only, **family.model_kwargs,
        **family.config_overrides)
    tokenizer.padding_side = family.padding_side
    return tokenizer, model


def load_checkpoint(source: str, family: Family, *, component: str
                    ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model of ``source`` (a checkpoint directory or a hub name), with the
    family's padding side. ``component`` names the encoder in error messages."""
    path = Path(source).expanduser()
    if path.is_dir():
        where = f"text.{component}.pretrained: {path} is not a usable checkpoint directory"
        if not (path / "config.json").is_file():
            raise EmoplugError(f"{where} (no config.json)")
        try:
            return _from_pretrained(str(path), family, local_files_only=True)
        except (OSError, ValueError) as err:
            raise EmoplugError(f"{where} ({_first_line(err)})") from None
    if _looks_like_path(source):
        raise EmoplugError(f"text.{component}.pretrained: no directory {source}")

    missing = EmoplugError(
        f"{source} is not in the local cache and the hub is unreachable; pass a local path "
        f"with text.{component}.pretrained=... (or tiny: true)")
    try:
        return _from_pretrained(source, family, local_files_only=True)
    except OSError:
        if hub_offline() or not hub_reachable():
            raise missing from None
    try:
        return _from_pretrained(source, family, local_files_only=False)
    except OSError as err:
        raise EmoplugError(f"text.{component}.pretrained: {source} could not be loaded from "
                           f"the hub ({_first_line(err)})") from None
