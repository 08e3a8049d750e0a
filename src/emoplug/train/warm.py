"""Filling the audio feature cache before a run's jobs read it."""

from __future__ import annotations

import json
import sys

from emoplug.recipe import Plan, audio_mode
from emoplug.train.context import RunContext


def warm_feature_cache(plan: Plan, ctx: RunContext | None = None, rank: int = 0,
                       world: int = 1, verbose: bool = False,
                       progress: bool | None = None) -> dict[str, int]:
    """Compute every audio feature the plan needs that the cache lacks (this rank's share of
    the utterances; featurizers whose model trains, ``mode: finetune`` or ``staged``, cache
    nothing), with a bar (counts, ETA) when ``progress`` (default: ``verbose``) on
    rank 0. ``verbose`` adds a line per featurizer. Returns ``{featurizer cache key:
    features computed}``."""
    from emoplug.data.features import featurize_corpus

    if ctx is None:
        from accelerate import PartialState

        state = PartialState()
        rank, world = state.process_index, state.num_processes
        ctx = RunContext(plan, plan.output_dir())
    configs = {json.dumps(c.config["audio"], sort_keys=True): c.config["audio"]
               for c in plan.cells if audio_mode(c.config["audio"]) == "frozen"}
    utterances = [u for u in ctx.corpus.utterances if u.audio][rank::world]
    computed: dict[str, int] = {}
    for config in configs.values():
        store = ctx.features(config)
        before = ctx.cache.stats.writes
        done = featurize_corpus(store.featurizer, utterances, ctx.cache,
                                progress=(verbose if progress is None else progress)
                                and rank == 0)
        store.failed.update(done.skipped)
        computed[store.featurizer.cache_key()] = ctx.cache.stats.writes - before
        if done.skipped:
            first = next(iter(done.skipped.values()))
            print(f"emoplug: {config['type']}: {len(done.skipped)} utterances have unreadable "
                  f"audio and are skipped (first: {first})", file=sys.stderr)
        if verbose:
            key = store.featurizer.cache_key()
            print(f"{config['type']}: {computed[key]} computed, "
                  f"{len(done.refs) - computed[key]} already cached", file=sys.stderr)
    return computed
