"""Reading a plan's corpus and splitting it into folds, each fold audited for leakage."""

from __future__ import annotations

import dataclasses
import sys

from emoplug.data.audit import audit_fold, speaker_leak_warning
from emoplug.errors import EmoplugError
from emoplug.recipe import Plan
from emoplug.registry import Registry, get_registry
from emoplug.types import Corpus, Fold


def load_corpus_and_folds(plan: Plan, registry: Registry | None = None, warn: bool = True
                          ) -> tuple[Corpus, list[Fold]]:
    """Read the plan's corpus and split it with the recipe's protocol and each named protocol
    its cells use (their folds named ``<name>:<fold>``); fold names must match what the plan
    announced. Each fold's ``meta["audit"]`` holds its leakage audit
    (``emoplug.data.audit``); with ``warn``, a protocol that puts test speakers in train says
    so in one line."""
    registry = registry or get_registry()
    dataset = registry.build("dataset", plan.dataset)
    need_audio = any(c.audio is not None for c in plan.cells)
    corpus = dataset.load(need_audio=need_audio, cache_dir=plan.cache_dir())
    if not corpus.utterances:
        raise EmoplugError(f"dataset '{plan.dataset['type']}' has no usable utterances "
                           f"(skipped: {corpus.skipped or 'none'})")
    if corpus.skipped:
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(corpus.skipped.items()))
        print(f"emoplug: {plan.dataset['type']}: skipped {sum(corpus.skipped.values())} "
              f"items ({detail})", file=sys.stderr)
    by_id = corpus.by_id()
    splits = [*([(None, plan.protocol, plan.folds)] if plan.folds else []),
              *((name, plan.protocols[name], folds) for name, folds in plan.protocol_folds.items())]
    folds: list[Fold] = []
    for name, config, expected in splits:
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
