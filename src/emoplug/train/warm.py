"""Filling the caches a run's jobs read: audio features, and transcripts made from speech."""

from __future__ import annotations

import json
import sys

from emoplug.recipe import Plan, audio_mode, transcribed
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
        ctx, rank, world = _context(plan)
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


def warm_transcripts(plan: Plan, ctx: RunContext | None = None, rank: int = 0,
                     world: int = 1, verbose: bool = False,
                     progress: bool | None = None) -> dict[str, int]:
    """Transcribe what the cache lacks of this rank's share of the utterances with every
    speech recogniser the plan's text encoders read (``source: asr``), with a bar when
    ``progress`` (default: ``verbose``) on rank 0; ``verbose`` adds a line per recogniser.
    Returns ``{recogniser cache key: transcripts made}``."""
    from emoplug.data.transcripts import transcribe_corpus

    configs = {json.dumps(c.config["text"]["asr"], sort_keys=True): c.config["text"]["asr"]
               for c in plan.cells if transcribed(c)}
    if not configs:
        return {}
    if ctx is None:
        ctx, rank, world = _context(plan)
    utterances = [u for u in ctx.corpus.utterances if u.audio][rank::world]
    made: dict[str, int] = {}
    for config in configs.values():
        recogniser = ctx.registry.build("asr", config)
        before = ctx.cache.stats.writes
        show = (verbose if progress is None else progress) and rank == 0
        done = transcribe_corpus(recogniser, utterances, ctx.cache,
                                 f"transcribing ({config['type']})" if show else None)
        key = recogniser.cache_key()
        made[key] = ctx.cache.stats.writes - before
        if done.failed:
            first = next(iter(done.failed.values()))
            print(f"emoplug: {config['type']}: {len(done.failed)} utterances have unreadable "
                  f"audio and no transcript (first: {first})", file=sys.stderr)
        if verbose:
            print(f"{config['type']} {config.get('pretrained', '')}: {made[key]} transcribed, "
                  f"{len(done.texts) - made[key]} already cached", file=sys.stderr)
    return made


def _context(plan: Plan) -> tuple[RunContext, int, int]:
    """A context of this process for the plan, and its rank among an accelerate launch's."""
    from accelerate import PartialState

    state = PartialState()
    return RunContext(plan, plan.output_dir()), state.process_index, state.num_processes
