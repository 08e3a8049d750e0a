"""Text from speech: transcripts made by a speech recogniser, cached, and their word error rate.

A transcript is cached in the feature cache under the namespace
``transcripts-<recogniser cache key>`` (the recogniser's name, every setting and its code
version), keyed by the content digest of the audio file, as a one-element unicode array. So
a corpus is transcribed once per recogniser config, whichever run, cell or process asks; a
changed audio file is transcribed again. Misses are transcribed in chunks, each cached as
soon as it is done, so a stopped run keeps what it transcribed.

The word error rate compares transcripts with the corpus's gold ones (``jiwer``), both
lower-cased and stripped of punctuation first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emoplug.components import SpeechRecogniser
from emoplug.data.audio import load_audio
from emoplug.data.cache import FeatureCache, file_digest
from emoplug.errors import EmoplugError
from emoplug.types import Utterance

#: waveforms held in memory and transcribed together before their transcripts are cached
CHUNK = 64


@dataclass
class Transcripts:
    """Transcripts by utterance id; ``failed`` holds why an utterance has none (its audio is
    missing or unreadable)."""

    texts: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def transcripts_namespace(recogniser: SpeechRecogniser) -> str:
    """The cache namespace of a recogniser config's transcripts."""
    return f"transcripts-{recogniser.cache_key()}"


def transcribe_corpus(recogniser: SpeechRecogniser, utterances: Iterable[Utterance],
                      cache: FeatureCache, progress: str | None = None) -> Transcripts:
    """The transcript of every utterance with audio: read from ``cache``, else made by
    ``recogniser`` and cached. Utterances sharing an audio file's content share its
    transcript; with ``progress``, a bar of that name counts the files transcribed."""
    namespace = transcripts_namespace(recogniser)
    out = Transcripts()
    missing: dict[str, list[Utterance]] = {}  # audio digest -> utterances with that audio
    for utt in utterances:
        if not utt.audio:
            out.failed[utt.id] = "no audio"
            continue
        try:
            digest = file_digest(utt.audio)
        except OSError as exc:
            out.failed[utt.id] = f"cannot read audio file {utt.audio}: {exc.strerror}"
            continue
        cached = cache.get(namespace, digest)
        if cached is not None:
            out.texts[utt.id] = str(cached[0])
        else:
            missing.setdefault(digest, []).append(utt)
    bar = None
    if progress is not None and missing:
        from tqdm import tqdm

        bar = tqdm(total=len(missing), desc=progress, unit="file", leave=False,
                   dynamic_ncols=True)
    digests = list(missing)
    for start in range(0, len(digests), CHUNK):
        readable: dict[str, np.ndarray] = {}
        for digest in digests[start:start + CHUNK]:
            try:
                readable[digest] = load_audio(missing[digest][0].audio, recogniser.sample_rate)
            except EmoplugError as exc:
                for utt in missing[digest]:
                    out.failed[utt.id] = str(exc).splitlines()[0]
        texts = recogniser.transcribe(list(readable.values())) if readable else []
        if len(texts) != len(readable):
            raise EmoplugError(f"speech recogniser '{recogniser.name}' gave {len(texts)} "
                               f"transcripts for {len(readable)} waveforms")
        for digest, text in zip(readable, texts, strict=True):
            cache.put(namespace, digest, np.array([str(text)]))
            for utt in missing[digest]:
                out.texts[utt.id] = str(text)
        if bar is not None:
            bar.update(len(digests[start:start + CHUNK]))
    if bar is not None:
        bar.close()
    return out


def _normalise() -> Any:
    """jiwer's transform of both sides: lower case, no punctuation, single spaces, words."""
    import jiwer

    return jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                          jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                          jiwer.ReduceToListOfListOfWords()])


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]
                    ) -> dict[str, float | int] | None:
    """The corpus word error rate of ``hypotheses`` against ``references`` (pairs in order):
    (substitutions + deletions + insertions) / reference words, over the pairs whose
    reference has a word after normalisation. ``{"wer", "words", "utterances",
    "substitutions", "deletions", "insertions"}``; None when no pair has a reference word."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references, {len(hypotheses)} hypotheses")
    transform = _normalise()
    pairs = [(ref, hyp) for ref, hyp in zip(references, hypotheses, strict=True)
             if transform(ref) and transform(ref)[0]]
    if not pairs:
        return None
    scored = jiwer.process_words([ref for ref, _ in pairs], [hyp for _, hyp in pairs],
                                 reference_transform=transform, hypothesis_transform=transform)
    words = scored.hits + scored.substitutions + scored.deletions
    return {"wer": float(scored.wer), "words": int(words), "utterances": len(pairs),
            "substitutions": int(scored.substitutions), "deletions": int(scored.deletions),
            "insertions": int(scored.insertions)}
