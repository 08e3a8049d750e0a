"""What every job of a run shares in one process: corpus, folds, features, text caches.

Built once per process, so many small jobs pay no per-job start-up cost: the corpus is read
once, each audio feature is loaded from the cache once (kept in memory up to a budget, as
are the waveforms of speech models that train and a speech stage's features),
frozen/staged text outputs are loaded once per (encoder, fold, seed), and transcripts made
from speech once per speech recogniser config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoplug.components import recipe_key
from emoplug.data.cache import FeatureCache
from emoplug.data.features import load_features
from emoplug.data.loading import load_corpus_and_folds
from emoplug.data.transcripts import Transcripts, transcribe_corpus
from emoplug.errors import EmoplugError
from emoplug.recipe import Plan
from emoplug.registry import Registry, get_registry
from emoplug.train.packed import PackedSequences, pack_text, resolved
from emoplug.types import Corpus, Fold, Utterance

#: bytes of audio features kept in memory per process (``EMOPLUG_FEATURE_MEMORY``, in MB)
DEFAULT_FEATURE_MEMORY_MB = 4096


def feature_memory_bytes() -> int:
    """Bytes of audio features kept in memory per process: ``EMOPLUG_FEATURE_MEMORY`` (a
    whole number of MB) or the default; a bad value raises :class:`EmoplugError` (the CLI
    checks it before anything is written)."""
    raw = os.environ.get("EMOPLUG_FEATURE_MEMORY")
    if raw is None:
        return DEFAULT_FEATURE_MEMORY_MB << 20
    try:
        megabytes = int(raw)
    except ValueError:
        megabytes = -1
    if megabytes < 0:
        raise EmoplugError(f"EMOPLUG_FEATURE_MEMORY={raw!r} is not a whole number of MB "
                           f"(default {DEFAULT_FEATURE_MEMORY_MB})")
    return megabytes << 20


@dataclass
class MemoryBudget:
    """Bytes of features a process may keep in memory, shared by all its feature stores."""

    limit: int
    used: int = 0

    def take(self, nbytes: int) -> bool:
        if self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True

    def give_back(self, nbytes: int) -> None:
        self.used = max(0, self.used - nbytes)


@dataclass
class FeatureStore:
    """Features of one featurizer for the corpus: read from the cache on first use and kept
    in memory while the process's ``budget`` allows (beyond it, read again per batch).

    One store serves every featurizer config with the same cache key, so ``featurizer`` is
    the first such config built: use it to compute features only (which the key covers),
    never for settings outside the key such as the encoder (build those from the job's
    own config)."""

    featurizer: Any
    cache: FeatureCache
    budget: MemoryBudget
    held: dict[str, np.ndarray] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    _packed: PackedSequences | None = None
    _packed_utterances: dict[str, Utterance] = field(default_factory=dict)

    def compute(self, utt: Utterance) -> np.ndarray | None:
        """Features of ``utt`` (computed and cached on a miss); None when its audio is
        unreadable (the reason is kept in ``failed``)."""
        if utt.id in self.held:
            return self.held[utt.id]
        if utt.id in self.failed:
            return None
        try:
            array = self.read(utt)
        except EmoplugError as exc:
            self.failed[utt.id] = str(exc).splitlines()[0]
            return None
        self.frames[utt.id] = int(array.shape[0])
        if self.budget.take(array.nbytes):
            self.held[utt.id] = array
        return array

    def read(self, utt: Utterance) -> np.ndarray:
        """The features of ``utt`` from the cache (computed on a miss)."""
        return load_features(self.featurizer, utt, self.cache)

    def available(self, utt: Utterance) -> bool:
        """Whether ``utt`` has features, reading them only the first time (features beyond
        the memory budget are not read again just to ask)."""
        return utt.id in self.frames or self.compute(utt) is not None

    def loader(self, utt: Utterance):
        """A zero-argument callable returning the features in their stored dtype (float16 or
        float32; the collator hands float32 to the model)."""
        def load() -> np.ndarray:
            array = self.compute(utt)
            if array is None:
                raise EmoplugError(f"features of {utt.id} are unavailable: {self.failed[utt.id]}")
            return array
        return load

    def packed(self, utterances: list[Utterance], device: Any) -> PackedSequences:
        """The features of ``utterances`` (all readable) packed on ``device``; one bank per
        store, rebuilt only for another device or an utterance it lacks (then it keeps the
        utterances it had, so jobs over different subsets do not rebuild it in turn)."""
        if self._packed is None or not self._packed.covers([u.id for u in utterances], device):
            wanted = {**self._packed_utterances, **{u.id: u for u in utterances}}
            self._packed = None  # free the old bank before building the new one
            for utt in wanted.values():
                if not self.available(utt):
                    raise EmoplugError(f"features of {utt.id} are unavailable: "
                                       f"{self.failed[utt.id]}")
            self._packed = PackedSequences(
                list(wanted), [self.frames[i] for i in wanted],
                (self.compute(u) for u in wanted.values()), device)
            self._packed_utterances = wanted
        return self._packed

    def drop_packed(self) -> None:
        self._packed, self._packed_utterances = None, {}


@dataclass
class WaveformStore(FeatureStore):
    """The model-ready waveforms ``[samples, 1]`` float32 of a speech featurizer that trains
    (``mode: finetune``: :meth:`AudioFeaturizer.prepare_waveform`), read from the audio files
    (not the feature cache) and kept in memory while the budget allows."""

    def read(self, utt: Utterance) -> np.ndarray:
        from emoplug.data.audio import load_audio

        if not utt.audio:
            raise EmoplugError(f"utterance {utt.id} has no audio file")
        waveform = load_audio(utt.audio, self.featurizer.sample_rate)
        return np.ascontiguousarray(self.featurizer.prepare_waveform(waveform)[:, None],
                                    dtype=np.float32)


@dataclass
class FeatureArrays:
    """One featurizer's features for a corpus (``key``: its cache key), sent to processes
    that do not read the cache (Ray workers); ``failed``: utterance id -> why it has none."""

    key: str
    arrays: dict[str, np.ndarray]
    failed: dict[str, str]


class RunContext:
    """Shared state of one process while it runs a plan's jobs."""

    def __init__(self, plan: Plan, output_dir: Path, registry: Registry | None = None,
                 rank: int = 0, world: int = 1,
                 loaded: tuple[Corpus, list[Fold]] | None = None):
        """``loaded``: the corpus and folds when another process read them (a Ray worker
        gets them from the driver); read from the dataset otherwise."""
        self.plan = plan
        self.rank, self.world = rank, world  # this process among those sharing the run
        self.output_dir = output_dir
        self.registry = registry or get_registry()
        self.cache = FeatureCache(plan.cache_dir())
        self.need_audio = any(c.audio is not None for c in plan.cells)
        self.corpus, folds = loaded or load_corpus_and_folds(plan.corpus_request(),
                                                             self.registry, warn=rank == 0)
        self.folds: dict[str, Fold] = {f.name: f for f in folds}
        self.by_id = self.corpus.by_id()
        self.labels = list(self.corpus.labels)
        self._budget = MemoryBudget(feature_memory_bytes())
        self._stores: dict[str, FeatureStore] = {}
        self.text_outputs: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._transcripts: dict[str, Transcripts] = {}  # by speech recogniser cache key
        #: key -> (the text_outputs dict it was packed from, sequence, pooled)
        self._packed_text: dict[str, tuple[Any, PackedSequences, PackedSequences]] = {}
        self.device_inputs_failed: str | None = None  # why packing was given up, if it was
        self.show_progress = False  # bars for slow passes (frozen encoders) on this process

    def transcripts(self, text_config: dict[str, Any]) -> dict[str, str]:
        """The transcripts a text encoder config reads, by utterance id: the corpus's own
        (``source: gold``, the default), or those its speech recogniser makes from the audio
        (``source: asr``; an utterance whose audio cannot be read has none)."""
        if text_config.get("source", "gold") == "gold":
            return {u.id: u.text for u in self.corpus.utterances if u.text}
        with recipe_key(f"{self.plan.component_key('text', text_config)}.asr"):
            return self.asr_transcripts(text_config["asr"]).texts

    def asr_transcripts(self, asr_config: dict[str, Any]) -> Transcripts:
        """The transcripts of one speech recogniser config (made once per process, read
        from the cache when another process or run made them)."""
        recogniser = self.registry.build("asr", asr_config)
        key = recogniser.cache_key()
        if key not in self._transcripts:
            progress = f"transcribing ({asr_config['type']})" if self.show_progress else None
            self._transcripts[key] = transcribe_corpus(recogniser, self.corpus.utterances,
                                                       self.cache, progress)
        return self._transcripts[key]

    def adopt_transcripts(self, shipped: dict[str, Transcripts]) -> None:
        """Serve speech recognisers' transcripts made by another process (a Ray worker gets
        the driver's), by recogniser cache key."""
        self._transcripts.update(shipped)

    def work_dir(self) -> Path:
        path = self.plan.cache_dir() / "models"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def features(self, audio_config: dict[str, Any]) -> FeatureStore:
        """The feature store of one featurizer config (one per process)."""
        featurizer = self.registry.build("audio", audio_config)
        key = featurizer.cache_key()
        if key not in self._stores:
            self._stores[key] = FeatureStore(featurizer, self.cache, self._budget)
        return self._stores[key]

    def waveforms(self, audio_config: dict[str, Any]) -> WaveformStore:
        """The waveform store of a featurizer config whose model trains (one per process,
        shared by the configs that differ only in their encoder and training settings)."""
        featurizer = self.registry.build("audio", audio_config)
        ignored = {"encoder", *getattr(featurizer, "training_settings", ())}
        key = "waveform-" + json.dumps({k: v for k, v in audio_config.items()
                                        if k not in ignored}, sort_keys=True)
        if key not in self._stores:
            self._stores[key] = WaveformStore(featurizer, self.cache, self._budget)
        return self._stores[key]

    def exclusive_store(self, key: str, prefix: str,
                        make: Callable[[MemoryBudget], FeatureStore]) -> FeatureStore:
        """The store under ``key``, made by ``make(budget)`` when missing; the other stores
        whose key starts with ``prefix`` are dropped and their memory given back (one of
        their kind kept at a time, e.g. a speech stage's features)."""
        for other in [k for k in self._stores if k.startswith(prefix) and k != key]:
            dropped = self._stores.pop(other)
            self._budget.give_back(sum(a.nbytes for a in dropped.held.values()))
        if key not in self._stores:
            self._stores[key] = make(self._budget)
        return self._stores[key]
    def feature_arrays(self, audio_config: dict[str, Any]) -> FeatureArrays:
        """Every utterance's features of one featurizer config, and why the unreadable ones
        have none (read from the cache, computed on a miss): what a Ray worker is sent."""
        store = self.features(audio_config)
        arrays = {}
        for utt in self.corpus.utterances:
            if utt.audio:
                array = store.compute(utt)
                if array is not None:
                    arrays[utt.id] = array
        return FeatureArrays(store.featurizer.cache_key(), arrays, dict(store.failed))

    def adopt_features(self, audio_config: dict[str, Any], shipped: FeatureArrays) -> None:
        """Serve ``audio_config``'s features from ``shipped`` (another process's
        :meth:`feature_arrays`) instead of the cache; they are held whatever the budget."""
        store = self.features(audio_config)
        if store.featurizer.cache_key() != shipped.key:
            raise EmoplugError(f"features shipped for {shipped.key} cannot serve "
                               f"{store.featurizer.cache_key()}")
        store.held.update(shipped.arrays)
        store.frames.update({i: int(a.shape[0]) for i, a in shipped.arrays.items()})
        store.failed.update(shipped.failed)

    def packed_text(self, key: str, device: Any) -> tuple[PackedSequences, PackedSequences]:
        """The text outputs ``text_outputs[key]`` packed on ``device`` (sequence, pooled),
        kept while ``text_outputs`` keeps that same dict."""
        for stale in [k for k, (source, *_) in self._packed_text.items()
                      if self.text_outputs.get(k) is not source]:
            del self._packed_text[stale]
        entry = self._packed_text.get(key)
        if entry is None or entry[1].device != resolved(device):
            outputs = self.text_outputs[key]
            entry = self._packed_text[key] = (outputs, *pack_text(outputs, device))
        return entry[1], entry[2]

    def drop_packed(self) -> None:
        """Free every input packed on a device (after it ran out of memory)."""
        for store in self._stores.values():
            store.drop_packed()
        self._packed_text.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
