"""Reading a plan's corpus and splitting it into folds."""

from __future__ import annotations

import sys

from emoplug.errors import EmoplugError
from emoplug.recipe import Plan
from emoplug.registry import Registry, get_registry
from emoplug.types import Corpus, Fold


def load_corpus_and_folds(plan: Plan, registry: Registry | None = None
                          ) -> tuple[Corpus, list[Fold]]:
    """Read the plan's corpus and split it; fold names must match what the plan announced."""
    registry = registry or get_registry()
    dataset = registry.build("dataset", plan.dataset)
    protocol = registry.build("protocol", plan.protocol)
    need_audio = any(c.audio is not None for c in plan.cells)
    corpus = dataset.load(need_audio=need_audio, cache_dir=plan.cache_dir())
    if not corpus.utterances:
        raise EmoplugError(f"dataset '{plan.dataset['type']}' has no usable utterances "
                           f"(skipped: {corpus.skipped or 'none'})")
    if corpus.skipped:
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(corpus.skipped.items()))
        print(f"emoplug: {plan.dataset['type']}: skipped {sum(corpus.skipped.values())} "
              f"items ({detail})", file=sys.stderr)
    folds = protocol.folds(corpus)
    names = [f.name for f in folds]
    if names != plan.folds:
        raise EmoplugError(f"protocol '{plan.protocol['type']}' produced folds {names}, but the "
                           f"plan expected {plan.folds} from the dataset's description")
    return corpus, folds
