"""The feature cache and featurize_corpus: hits, invalidation, corruption, atomicity, and
each feature computed once."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from emoplug import EmoplugError, Utterance
from emoplug.data import cache as cache_module
from emoplug.data.audio import load_audio
from emoplug.data.cache import FeatureCache, file_digest
from emoplug.data.features import featurize_corpus, load_features
from emoplug.files import default_cache_dir
from emoplug_audio.mfcc import MFCC

SR = 16000


class CountingMFCC(MFCC):
    """MFCC that counts how often it really computes."""

    def __init__(self, config=None):
        super().__init__(config)
        self.calls = 0

    def featurize(self, waveform, sample_rate):
        self.calls += 1
        return super().featurize(waveform, sample_rate)


def write_tone(path, freq: float, seconds: float = 0.3) -> str:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return str(path)


def entries(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- FeatureCache ---------------------------------------------------------------------------

def test_hit_and_miss(tmp_path):
    cache = FeatureCache(tmp_path)
    assert cache.get("ns", "abcd") is None
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put("ns", "abcd", array)
    np.testing.assert_array_equal(cache.get("ns", "abcd"), array)
    assert cache.get("other", "abcd") is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (1, 2, 1)
    assert cache.path("ns", "abcd") == tmp_path / "ns" / "ab" / "abcd.npy"


def test_float16_round_trip(tmp_path):
    cache = FeatureCache(tmp_path)
    array = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float16)
    cache.put("ns", "k1", array)
    restored = cache.get("ns", "k1")
    assert restored.dtype == np.float16
    np.testing.assert_array_equal(restored, array)


def test_get_or_compute_computes_once(tmp_path):
    cache, calls = FeatureCache(tmp_path), []

    def compute():
        calls.append(1)
        return np.ones((2, 2), np.float32)

    for _ in range(3):
        cache.get_or_compute("ns", "key", compute)
    assert len(calls) == 1


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOPLUG_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert FeatureCache().root == tmp_path / "c"


@pytest.mark.parametrize("where", ["digest", "payload", "truncate"])
def test_corrupt_entry_is_detected_removed_and_recomputed(tmp_path, where, capsys):
    cache = FeatureCache(tmp_path)
    cache.put("ns", "key", np.arange(100, dtype=np.float32))
    path = cache.path("ns", "key")
    blob = bytearray(path.read_bytes())
    if where == "digest":
        blob[3] ^= 0xFF
    elif where == "payload":
        blob[-7] ^= 0x01
    else:
        blob = blob[:40]
    path.write_bytes(bytes(blob))

    assert cache.get("ns", "key") is None
    assert cache.stats.corrupt == 1 and not path.exists()
    assert "corrupt cache entry" in capsys.readouterr().err
    again = cache.get_or_compute("ns", "key", lambda: np.zeros(3, np.float32))
    np.testing.assert_array_equal(again, np.zeros(3))
    np.testing.assert_array_equal(cache.get("ns", "key"), np.zeros(3))


def test_writes_leave_no_temporary_files(tmp_path):
    cache = FeatureCache(tmp_path)
    for i in range(5):
        cache.put("ns", f"{i:02d}key", np.full(4, i, np.float32))
    cache.put("ns", "00key", np.zeros(4, np.float32))  # overwrite in place
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert len(entries(tmp_path)) == 5


def test_a_failed_write_leaves_neither_entry_nor_temporary_file(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)

    def crash(src, dst):
        raise KeyboardInterrupt  # e.g. the run is killed between write and rename

    monkeypatch.setattr(cache_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put("ns", "key", np.ones(3, np.float32))
    monkeypatch.undo()
    assert entries(tmp_path) == []
    assert cache.get("ns", "key") is None


def test_file_digest_follows_content_not_path(tmp_path):
    a = write_tone(tmp_path / "a.wav", 200)
    b = tmp_path / "b.wav"
    b.write_bytes(open(a, "rb").read())
    assert file_digest(a) == file_digest(b)
    before = file_digest(a)
    write_tone(a, 300, seconds=0.4)  # the audio is edited
    assert file_digest(a) != before


# -- featurize_corpus / load_features ------------------------------------------------------

@pytest.fixture
def corpus(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    utts = [Utterance(f"u{i}", "spk", "s1", audio=write_tone(audio / f"u{i}.wav", 150 + 30 * i))
            for i in range(4)]
    (audio / "corrupt.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(audio / "empty.wav", np.zeros(0, np.float32), SR)
    broken = [
        Utterance("corrupt", "spk", "s1", audio=str(audio / "corrupt.wav")),
        Utterance("empty", "spk", "s1", audio=str(audio / "empty.wav")),
        Utterance("missing", "spk", "s1", audio=str(audio / "missing.wav")),
        Utterance("textonly", "spk", "s1", text="hello"),
    ]
    return utts, broken


def test_a_run_using_the_cache_twice_computes_each_feature_once(tmp_path, corpus):
    utts, _ = corpus
    cache = FeatureCache(tmp_path / "cache")
    featurizer = CountingMFCC()
    for _ in range(2):  # e.g. two cells of a grid, or a resumed run
        result = featurize_corpus(featurizer, utts, cache)
        features = {u.id: load_features(featurizer, u, cache) for u in utts}
    assert featurizer.calls == len(utts)
    assert set(result.refs) == {u.id for u in utts} and result.skipped == {}
    assert features["u0"].shape == (31, 40)
    ref = result.refs["u1"]
    assert ref.namespace == featurizer.cache_key() and ref.key == file_digest(utts[1].audio)

    fresh = CountingMFCC()  # a new process: same config, same cache, nothing recomputed
    featurize_corpus(fresh, utts, FeatureCache(tmp_path / "cache"))
    assert fresh.calls == 0


def test_config_change_and_audio_edit_invalidate(tmp_path, corpus):
    utts, _ = corpus
    cache = FeatureCache(tmp_path / "cache")
    featurize_corpus(CountingMFCC(), utts, cache)

    with_deltas = CountingMFCC(MFCC.Config(deltas=1))
    featurize_corpus(with_deltas, utts, cache)
    assert with_deltas.calls == len(utts)
    assert load_features(with_deltas, utts[0], cache).shape[1] == 80

    other_encoder = CountingMFCC(MFCC.Config(encoder={"hidden": 16}))
    featurize_corpus(other_encoder, utts, cache)
    assert other_encoder.calls == 0  # encoder settings do not touch features

    write_tone(utts[2].audio, 440, seconds=0.5)
    edited = CountingMFCC()
    featurize_corpus(edited, utts, cache)
    assert edited.calls == 1
    assert load_features(edited, utts[2], cache).shape == (51, 40)


def test_identical_audio_under_two_paths_is_computed_once(tmp_path, corpus):
    utts, _ = corpus
    copy = tmp_path / "copy.wav"
    copy.write_bytes(open(utts[0].audio, "rb").read())
    featurizer = CountingMFCC()
    result = featurize_corpus(featurizer, [*utts, Utterance("dup", "spk", "s1",
                                                            audio=str(copy))],
                              FeatureCache(tmp_path / "cache"))
    assert featurizer.calls == len(utts)
    assert result.refs["dup"].key == result.refs["u0"].key


def test_unreadable_audio_is_skipped_with_reasons(tmp_path, corpus):
    utts, broken = corpus
    cache = FeatureCache(tmp_path / "cache")
    result = featurize_corpus(CountingMFCC(), [*utts, *broken], cache)
    assert set(result.refs) == {u.id for u in utts}
    assert set(result.skipped) == {"corrupt", "empty", "missing", "textonly"}
    assert "corrupt.wav" in result.skipped["corrupt"]
    assert "empty" in result.skipped["empty"]
    assert "missing.wav" in result.skipped["missing"]
    with pytest.raises(EmoplugError, match="missing.wav"):
        load_features(MFCC(), broken[2], cache)


def test_corrupt_feature_is_recomputed_on_load(tmp_path, corpus):
    utts, _ = corpus
    cache = FeatureCache(tmp_path / "cache")
    featurizer = CountingMFCC()
    result = featurize_corpus(featurizer, utts, cache)
    expected = load_features(featurizer, utts[1], cache)
    ref = result.refs["u1"]
    path = cache.path(ref.namespace, ref.key)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x55
    path.write_bytes(bytes(blob))

    restored = load_features(featurizer, utts[1], cache)
    np.testing.assert_array_equal(restored, expected)
    assert featurizer.calls == len(utts) + 1 and cache.stats.corrupt == 1
    assert os.path.exists(path)


def test_progress_bar(tmp_path, corpus, capsys):
    utts, _ = corpus
    featurize_corpus(CountingMFCC(), utts, FeatureCache(tmp_path / "c"), progress=True)
    assert "featurize mfcc" in capsys.readouterr().err


class BatchedMFCC(MFCC):
    """MFCC filled ``batch_size()`` files at a time, refusing audio under 0.2 s."""

    def __init__(self, config=None):
        super().__init__(config)
        self.batches: list[int] = []

    def batch_size(self) -> int:
        return 3

    def featurize(self, waveform, sample_rate):
        if len(waveform) < 0.2 * SR:
            raise EmoplugError(f"audio of {len(waveform) / SR:.2f} s is too short")
        return super().featurize(waveform, sample_rate)

    def featurize_many(self, waveforms, sample_rate):
        self.batches.append(len(waveforms))
        return super().featurize_many(waveforms, sample_rate)


def test_the_cache_fills_in_batches_and_a_bad_file_is_skipped_alone(tmp_path, corpus):
    utts, _ = corpus
    short = Utterance("short", "spk", "s1", audio=write_tone(tmp_path / "short.wav", 200, 0.1))
    cache = FeatureCache(tmp_path / "cache")
    featurizer = BatchedMFCC()
    result = featurize_corpus(featurizer, [*utts[:2], short, *utts[2:]], cache)
    assert featurizer.batches == [3, 2]  # the batch holding the short file, then the rest
    assert result.skipped == {"short": "audio of 0.10 s is too short"}
    assert set(result.refs) == {u.id for u in utts}
    for utt in utts:  # the batch's other files are cached, as each alone gives them
        alone = MFCC().featurize(load_audio(utt.audio, SR), SR)
        np.testing.assert_array_equal(cache.get(featurizer.cache_key(),
                                                file_digest(utt.audio)), alone)
