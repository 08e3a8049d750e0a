"""Where a ``pretrained`` setting points: a checkpoint directory or a Hugging Face hub name.

Shared by components that load transformers checkpoints (the bundled text encoders and the
wav2vec featurizer), so their ``check`` finds the same problems, with the same words, without
loading anything: a directory that is not there or has no ``config.json``, and a hub name
that is neither in the local cache nor reachable. Light to import (huggingface_hub is
imported inside the functions).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from emoplug.errors import SettingError

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
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def in_hub_cache(name: str) -> bool:
    """True when the hub checkpoint ``name`` has a ``config.json`` in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repository id
        return False


def looks_like_path(source: str) -> bool:
    """True for a ``pretrained`` value that can only be a path (hub names are ``org/name``)."""
    return source.startswith(("/", "./", "../", "~", "\\")) or source.count("/") > 1


def not_cached(source: str, alternative: str = "") -> SettingError:
    """The problem of a hub name that is not cached while the hub is off or unreachable;
    ``alternative`` is another way out the component offers (``tiny: true``)."""
    other = f" (or {alternative})" if alternative else ""
    return SettingError("pretrained", f"{source} is not in the local Hugging Face cache and "
                                      "the hub is unreachable; give a local checkpoint "
                                      f"directory instead{other}")


def checkpoint_problem(source: str, alternative: str = "") -> SettingError | None:
    """Why ``source`` (a ``pretrained`` setting) cannot be loaded, found without loading it;
    None when it looks loadable. The network is probed only for a hub name that is not
    cached while the hub is not switched off. ``alternative``: as for :func:`not_cached`."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return SettingError("pretrained", f"{path} is not a usable checkpoint directory "
                                              "(no config.json)")
        return None
    if looks_like_path(source):
        return SettingError("pretrained", f"no directory {source}")
    if in_hub_cache(source) or not (hub_offline() or not hub_reachable()):
        return None
    return not_cached(source, alternative)
