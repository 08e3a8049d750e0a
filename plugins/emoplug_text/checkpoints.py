"""Load a tokenizer + transformer from a local directory or a Hugging Face hub name.

Every source, a user's ``roberta-base``, a local fine-tuned directory or a tiny test model,
goes through the same ``AutoTokenizer`` / ``AutoModel`` ``from_pretrained`` calls. Hub names
are looked up in the local cache first; the network is tried only when the cache misses, the
hub is not switched off (``HF_HUB_OFFLINE=1``) and its host answers a quick connection probe,
so a missing checkpoint is a fast one-line :class:`emoplug.SettingError` rather than a ~50 s
hang of download retries and a traceback. ``checkpoint_problem`` finds the same problems
without loading anything, for ``emoplug validate``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from emoplug import SettingError
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


class _ExpectedLoadNotes(logging.Filter):
    """Drops transformers' LOAD REPORT when it lists only UNEXPECTED keys: checkpoint weights
    the bare encoder has no use for (a pooler, a task head), expected whenever ``AutoModel``
    loads a checkpoint saved with a head. Reports of MISSING (newly initialised) or
    MISMATCHED weights, and every other warning, pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        return any(word in message for word in ("MISSING", "MISMATCH", "CONVERSION"))


@contextmanager
def _quiet_expected_notes() -> Iterator[None]:
    logger = logging.getLogger("transformers.modeling_utils")
    notes = _ExpectedLoadNotes()
    logger.addFilter(notes)
    try:
        yield
    finally:
        logger.removeFilter(notes)


def _from_pretrained(source: str, family: Family, *, local_files_only: bool
                     ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per job would drown the run's own progress
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    with _quiet_expected_notes():
        model = AutoModel.from_pretrained(
            source, local_files_only=local_files_only, **family.model_kwargs,
            **family.config_overrides)
    tokenizer.padding_side = family.padding_side
    return tokenizer, model


def _in_hub_cache(name: str) -> bool:
    """True when the hub checkpoint ``name`` has a config in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repository id
        return False


def checkpoint_problem(source: str) -> SettingError | None:
    """Why ``source`` (the ``pretrained`` setting) cannot be loaded, found without loading
    it: a missing directory, one without ``config.json``, or a hub name that is neither in
    the local cache nor reachable. None when it looks loadable."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return SettingError("pretrained", f"{path} is not a usable checkpoint directory "
                                              "(no config.json)")
        return None
    if _looks_like_path(source):
        return SettingError("pretrained", f"no directory {source}")
    if _in_hub_cache(source) or not (hub_offline() or not hub_reachable()):
        return None
    return _not_cached(source)


def _not_cached(source: str) -> SettingError:
    return SettingError("pretrained", f"{source} is not in the local Hugging Face cache and "
                                      "the hub is unreachable; give a local checkpoint "
                                      "directory instead (or tiny: true)")


def load_checkpoint(source: str, family: Family
                    ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model of ``source`` (a checkpoint directory or a hub name), with the
    family's padding side. Problems are :class:`emoplug.SettingError` of ``pretrained``."""
    path = Path(source).expanduser()
    if path.is_dir():
        problem = checkpoint_problem(source)
        if problem is not None:
            raise problem
        try:
            return _from_pretrained(str(path), family, local_files_only=True)
        except (OSError, ValueError) as err:
            raise SettingError("pretrained", f"{path} is not a usable checkpoint directory "
                                             f"({_first_line(err)})") from None
    if _looks_like_path(source):
        raise SettingError("pretrained", f"no directory {source}")
    try:
        return _from_pretrained(source, family, local_files_only=True)
    except OSError:
        if hub_offline() or not hub_reachable():
            raise _not_cached(source) from None
    try:
        return _from_pretrained(source, family, local_files_only=False)
    except OSError as err:
        raise SettingError("pretrained", f"{source} could not be loaded from the hub "
                                         f"({_first_line(err)})") from None
