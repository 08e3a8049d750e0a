"""Reading a plan's corpus and splitting it into folds, each fold audited for leakage."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoplug.data.audit import audit_fold, speaker_leak_warning
from emoplug.errors import EmoplugError
from emoplug.registry import Registry, get_registry
from emoplug.types import Corpus, Fold


@dataclass(frozen=True)
class Split:
    """One protocol to split the corpus with: ``name`` None for the recipe's ``protocol``,
    else a name from ``protocols`` (its folds are called ``<name>:<fold>``); ``folds``: the
    fold names the plan announced."""

    name: str | None
    config: dict[str, Any]
    folds: list[str]


@dataclass(frozen=True)
class CorpusRequest:
    """What a plan asks of the data layer: a dataset, the protocols to split it with, and
    whether audio is read (``emoplug.recipe.Plan.corpus_request`` builds it)."""

    dataset: dict[str, Any]
    splits: list[Split]
    need_audio: bool
    cache_dir: Path


def load_corpus_and_folds(request: CorpusRequest, registry: Registry | None = None,
                          warn: bool = True) -> tuple[Corpus, list[Fold]]:
    """Read the requested corpus and split it with each protocol of ``request.splits``; fold
    names must match what the plan announced. Each fold's ``meta["audit"]`` holds its leakage
    audit (``emoplug.data.audit``); with ``warn``, a protocol that puts test speakers in train
    says so in one line."""
    registry = registry or get_registry()
    dataset = registry.build("dataset", request.dataset)
    corpus = dataset.load(need_audio=request.need_audio, cache_dir=request.cache_dir)
    if not corpus.utterances:
        raise EmoplugError(f"dataset '{request.dataset['type']}' has no usable utterances "
                           f"(skipped: {corpus.skipped or 'none'})")
    if corpus.skipped:
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(corpus.skipped.items()))
        print(f"emoplug: {request.dataset['type']}: skipped {sum(corpus.skipped.values())} "
              f"items ({detail})", file=sys.stderr)
    by_id = corpus.by_id()
    folds: list[Fold] = []
    for name, config, expected in ((s.name, s.config, s.folds) for s in request.splits):
        protocol = registry.build("protocol", config)
        made = [dataclasses.replace(f, name=f"{name}:{f.name}" if name else f.name,
                                    meta={**f.meta, "audit": audit_fold(f, by_id)})
                for f in protocol.folds(corpus)]
        label = f"'{name}' ({config['type']})" if name else f"'{config['type']}'"
        warning = speaker_leak_warning(name or config["type"], made)
        if warn and warning:
            print(warning, file=sys.stderr)
        names = [f.name for f in made]
        if names != expected:
            raise EmoplugError(f"protocol {label} produced folds {names}, but the plan "
                               f"expected {expected} from the dataset's description")
        folds += made
    return corpus, folds
