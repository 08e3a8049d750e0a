"""Load a tokenizer + transformer from a local directory or a Hugging Face hub name.

Every source, a user's ``roberta-base``, a local fine-tuned directory or a tiny test model,
goes through the same ``AutoTokenizer`` / ``AutoModel`` ``from_pretrained`` calls. Hub names
are looked up in the local cache first; the network is tried only when the cache misses, the
hub is not switched off (``HF_HUB_OFFLINE=1``) and its host answers a quick connection probe,
so a missing checkpoint is a fast one-line :class:`emoplug.SettingError` rather than a ~50 s
hang of download retries and a traceback. ``emoplug.checkpoints.checkpoint_problem`` finds
the same problems without loading anything, for ``emoplug validate``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from emoplug import SettingError
from emoplug.checkpoints import (
    checkpoint_problem,
    hub_offline,
    hub_reachable,
    looks_like_path,
    not_cached,
)
from emoplug_text.families import Family

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: the way out of a missing checkpoint every text encoder offers
TINY = "tiny: true"

def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


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


def load_checkpoint(source: str, family: Family
                    ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model of ``source`` (a checkpoint directory or a hub name), with the
    family's padding side. Problems are :class:`emoplug.SettingError` of ``pretrained``."""
    path = Path(source).expanduser()
    if path.is_dir():
        problem = checkpoint_problem(source)
        if problem is not None:
            raise problem
        from safetensors import SafetensorError

        try:
            return _from_pretrained(str(path), family, local_files_only=True)
        except (OSError, ValueError, SafetensorError) as err:  # missing, damaged files
            raise SettingError("pretrained", f"{path} is not a usable checkpoint directory "
                                             f"({_first_line(err)})") from None
    if looks_like_path(source):
        raise SettingError("pretrained", f"no directory {source}")
    try:
        return _from_pretrained(source, family, local_files_only=True)
    except OSError:
        if hub_offline() or not hub_reachable():
            raise not_cached(source, TINY) from None
    try:
        return _from_pretrained(source, family, local_files_only=False)
    except OSError as err:
        raise SettingError("pretrained", f"{source} could not be loaded from the hub "
                                         f"({_first_line(err)})") from None
