"""The synthetic demo corpus: shape, determinism, caching, speed and learnability."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from emoplug.registry import get_registry


def build(**settings):
    return get_registry().build("dataset", {"type": "demo", **settings})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The default demo corpus, generated once for this module, and how long that took."""
    cache = tmp_path_factory.mktemp("demo-cache")
    started = time.perf_counter()
    corpus = build().load(need_audio=True, cache_dir=cache)
    return corpus, time.perf_counter() - started, cache


def test_shape_like_iemocap(generated):
    corpus, _, _ = generated
    assert corpus.labels == ("neutral", "happy", "angry", "sad")
    assert len(corpus.utterances) == 400 and corpus.skipped == {}
    assert sorted(Counter(u.speaker for u in corpus.utterances).values()) == [40] * 10
    assert sorted({u.session for u in corpus.utterances}) == [f"Ses0{i}" for i in range(1, 6)]
    assert {u.meta["improvised"] for u in corpus.utterances} == {True, False}
    assert set(Counter(u.label for u in corpus.utterances)) == set(corpus.labels)
    for u in corpus.utterances[:20]:
        assert u.text and u.id.startswith(u.session) and u.speaker.endswith(u.meta["gender"])
        assert all(1.0 <= v <= 5.0 for v in u.avd)
        wave, sr = soundfile.read(u.audio)
        info = soundfile.info(u.audio)
        assert sr == 16000 and info.subtype == "PCM_16"
        assert 1.0 <= len(wave) / sr <= 2.5 and np.abs(wave).max() > 0.01
    describe = build().describe()
    assert describe.sessions == tuple(sorted({u.session for u in corpus.utterances}))
    assert describe.speakers == tuple(sorted({u.speaker for u in corpus.utterances}))


def test_generation_is_fast_and_cached(generated):
    corpus, seconds, cache = generated
    assert seconds < 30
    folder = Path(corpus.meta["folder"])
    assert folder.parent == cache / "demo" and not list(folder.parent.glob(".tmp-*"))
    before = (folder / "utterances.jsonl").stat().st_mtime_ns
    started = time.perf_counter()
    again = build().load(need_audio=False, cache_dir=cache)
    assert time.perf_counter() - started < 2
    assert (folder / "utterances.jsonl").stat().st_mtime_ns == before  # reused, not rewritten
    assert [u.id for u in again.utterances] == [u.id for u in corpus.utterances]


def test_regeneration_is_byte_identical(tmp_path: Path):
    settings = {"utterances_per_speaker": 8, "seed": 3}
    first = build(**settings).load(need_audio=True, cache_dir=tmp_path / "a")
    second = build(**settings).load(need_audio=True, cache_dir=tmp_path / "b")
    root_a, root_b = Path(first.meta["folder"]), Path(second.meta["folder"])
    files_a = sorted(p.relative_to(root_a) for p in root_a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(root_b) for p in root_b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 80 + 2
    for rel in files_a:
        assert (root_a / rel).read_bytes() == (root_b / rel).read_bytes(), rel
    assert [(u.id, u.label, u.text, u.avd) for u in first.utterances] == \
           [(u.id, u.label, u.text, u.avd) for u in second.utterances]
    other = build(utterances_per_speaker=8, seed=4).load(need_audio=False, cache_dir=tmp_path)
    assert [u.text for u in other.utterances] != [u.text for u in first.utterances]


def test_a_damaged_wav_regenerates_the_corpus(tmp_path: Path, capsys):
    """The demo corpus lives in the cache: a damaged WAV is regenerated like a corrupt
    cache entry (today the utterance was skipped and every result that used it changed)."""
    settings = {"utterances_per_speaker": 6}
    first = build(**settings).load(need_audio=True, cache_dir=tmp_path)
    wav = Path(first.utterances[0].audio)
    original = wav.read_bytes()
    wav.write_bytes(b"not a wav" * 10)
    again = build(**settings).load(need_audio=True, cache_dir=tmp_path)
    assert len(again.utterances) == len(first.utterances) and not again.skipped
    assert wav.read_bytes() == original
    assert "has damaged audio; regenerating" in capsys.readouterr().err


def _audio_features(path: str) -> list[float]:
    """Log RMS and zero-crossing rate of the loud frames, and the share of loud frames."""
    wave, _ = soundfile.read(path, dtype="float32")
    frames = wave[: len(wave) // 400 * 400].reshape(-1, 400)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = rms > 0.3 * rms.max()
    zcr = (np.diff(np.sign(frames), axis=1) != 0).mean(axis=1)
    return [float(np.log(rms[loud].mean())), float(zcr[loud].mean()), float(loud.mean())]


def test_each_modality_carries_its_half_and_fusion_needs_both(generated):
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.preprocessing import StandardScaler

    corpus, _, _ = generated
    utts = corpus.utterances
    labels = np.array([u.label for u in utts])
    groups = [u.speaker for u in utts]
    words = CountVectorizer().fit_transform([u.text for u in utts])
    audio = StandardScaler().fit_transform([_audio_features(u.audio) for u in utts])

    def accuracy(features, target) -> float:
        model = LogisticRegression(max_iter=2000)
        return cross_val_score(model, features, target, cv=GroupKFold(5), groups=groups).mean()

    negative = np.isin(labels, ["angry", "sad"])
    high_arousal = np.isin(labels, ["angry", "happy"])
    assert accuracy(words, negative) > 0.8              # chance: 0.6
    assert accuracy(audio, high_arousal) > 0.8          # chance: ~0.5
    text_only, audio_only = accuracy(words, labels), accuracy(audio, labels)
    both = accuracy(hstack([words, csr_matrix(audio)]).tocsr(), labels)
    assert both > max(text_only, audio_only) + 0.05
    assert text_only < 0.85 and audio_only < 0.75       # no single modality is enough
