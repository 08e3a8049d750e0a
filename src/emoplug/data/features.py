"""Featurizing a corpus through the feature cache: each (featurizer config, audio content)
is computed once.

Entries live in the cache namespace ``featurizer.cache_key()`` (name + resolved settings +
code version) under the key ``file_digest(audio)`` (the file's bytes, not its path), so a
renamed file is still a hit and an edited one is recomputed.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from emoplug.components import AudioFeaturizer
from emoplug.data.audio import load_audio
from emoplug.data.cache import FeatureCache, file_digest
from emoplug.errors import EmoplugError
from emoplug.types import Utterance


@dataclass(frozen=True)
class FeatureRef:
    """Where one utterance's features are stored in the cache."""

    namespace: str
    key: str
    audio: str


@dataclass
class FeaturizedCorpus:
    """``refs`` maps utterance id to its cached features; ``skipped`` maps the ids that have
    no usable audio to the reason."""

    refs: dict[str, FeatureRef] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


#: warnings already shown, by (featurizer, warning class, message without its numbers)
_SHOWN: set[tuple[str, str, str]] = set()


def _compute(featurizer: AudioFeaturizer, audio: str) -> np.ndarray:
    """One file's features (see :func:`_compute_many`)."""
    return _compute_many(featurizer, [audio], [load_audio(audio, featurizer.sample_rate)])[0]


def _compute_many(featurizer: AudioFeaturizer, audios: list[str],
                  waveforms: list[np.ndarray]) -> list[np.ndarray]:
    """The features of loaded files, in one ``featurize_many`` call (one ``featurize`` for
    one file). A library's warning (librosa's ``n_fft=512 is too large for input signal of
    length=160`` for a 10 ms clip) is shown as one line naming the (first) file, the first
    time that kind of warning comes up in this process."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if len(waveforms) == 1:
            features = [featurizer.featurize(waveforms[0], featurizer.sample_rate)]
        else:
            features = featurizer.featurize_many(waveforms, featurizer.sample_rate)
    for warning in caught:
        kind = (featurizer.name, warning.category.__name__,
                re.sub(r"\d+", "#", str(warning.message)))
        if kind not in _SHOWN:
            _SHOWN.add(kind)
            print(f"emoplug: warning: {featurizer.name} on {audios[0]} "
                  f"({len(waveforms[0]) / featurizer.sample_rate * 1000:.0f} ms): "
                  f"{warning.message} (shown once; other files may have it too)",
                  file=sys.stderr)
    return features


def featurize_corpus(featurizer: AudioFeaturizer, utterances: Iterable[Utterance],
                     cache: FeatureCache, progress: bool = False) -> FeaturizedCorpus:
    """Compute and cache the features of every utterance that has audio, up to
    ``featurizer.batch_size()`` files per ``featurize_many`` call.

    Entries already in the cache are not read here (:func:`load_features` verifies them
    and recomputes a corrupt one). Unreadable or empty audio is skipped with its reason.
    """
    namespace = featurizer.cache_key()
    result = FeaturizedCorpus()
    items = list(utterances)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"featurize {featurizer.name}", unit="utt")
    pending: dict[str, tuple[str, np.ndarray, list[str]]] = {}  # key -> (path, wave, ids)

    def one(key: str) -> np.ndarray | None:
        """One pending file's features; None (its utterances skipped) when it fails."""
        path, waveform, ids = pending[key]
        try:
            return _compute_many(featurizer, [path], [waveform])[0]
        except EmoplugError as exc:
            for utt_id in ids:
                result.skipped[utt_id] = str(exc)
                del result.refs[utt_id]
            return None

    def flush() -> None:
        keys = list(pending)
        try:
            arrays = (_compute_many(featurizer, [pending[k][0] for k in keys],
                                    [pending[k][1] for k in keys]) if len(keys) > 1
                      else [one(keys[0])])
        except EmoplugError:  # one file's problem: find it by featurizing them one by one
            arrays = [one(k) for k in keys]
        for key, array in zip(keys, arrays, strict=True):
            if array is not None:
                cache.put(namespace, key, array)
        pending.clear()

    for utt in items:
        if not utt.audio:
            result.skipped[utt.id] = "no audio file"
            continue
        try:
            key = file_digest(utt.audio)
            if key in pending:
                pending[key][2].append(utt.id)
            elif not cache.contains(namespace, key):
                pending[key] = (utt.audio, load_audio(utt.audio, featurizer.sample_rate),
                                [utt.id])
        except FileNotFoundError:
            result.skipped[utt.id] = f"audio file {utt.audio} not found"
            continue
        except EmoplugError as exc:
            result.skipped[utt.id] = str(exc)
            continue
        result.refs[utt.id] = FeatureRef(namespace, key, utt.audio)
        if len(pending) >= featurizer.batch_size():
            flush()
    if pending:
        flush()
    return result


def load_features(featurizer: AudioFeaturizer, utterance: Utterance,
                  cache: FeatureCache) -> np.ndarray:
    """The features of one utterance: from the cache when present and intact, else computed
    (and stored). Raises :class:`EmoplugError` when the utterance has no readable audio."""
    if not utterance.audio:
        raise EmoplugError(f"utterance {utterance.id} has no audio file")
    try:
        key = file_digest(utterance.audio)
    except FileNotFoundError as exc:
        raise EmoplugError(f"audio file {utterance.audio} not found") from exc
    return cache.get_or_compute(featurizer.cache_key(), key,
                                lambda: _compute(featurizer, utterance.audio))
