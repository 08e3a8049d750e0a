"""Protocol invariants: disjoint parts, held-out sessions/speakers, determinism, filters."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from emoplug import Corpus, DatasetInfo, EmoplugError, Utterance
from emoplug.data.summary import format_summary, summarize
from emoplug.registry import get_registry

LABELS = ("neutral", "happy", "angry", "sad")
SESSIONS = tuple(f"Ses0{i}" for i in range(1, 6))
SPEAKERS = tuple(f"{s}_{g}" for s in SESSIONS for g in "FM")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    """600 utterances over 10 speakers; the label mix differs between speakers."""
    rng = np.random.default_rng(0)
    utterances = []
    for n, speaker in enumerate(SPEAKERS):
        session, gender = speaker.split("_")
        priors = np.roll([0.4, 0.3, 0.2, 0.1], n)
        for i in range(60):
            meta = {} if i == 59 else {"improvised": i % 3 != 0, "gender": gender}
            utterances.append(Utterance(
                id=f"{session}{gender}_x_{gender}{i:03d}", speaker=speaker, session=session,
                text="t", label=LABELS[rng.choice(4, p=priors)], meta=meta))
    rng.shuffle(utterances)  # protocols must not depend on corpus order
    return Corpus("toy", LABELS, utterances)


def folds_of(corpus: Corpus, **settings):
    protocol = get_registry().build("protocol", settings)
    return protocol, protocol.folds(corpus)


ALL = [{"type": "loso"}, {"type": "loso", "dev": "speaker"}, {"type": "loso", "dev": "session"},
       {"type": "loso_speaker"},
       {"type": "kfold"}, {"type": "kfold", "k": 3, "dev": "speaker"}, {"type": "random"},
       {"type": "loso", "subset": "improvised"}, {"type": "random", "subset": "scripted"}]


@pytest.mark.parametrize("settings", ALL, ids=lambda s: "-".join(map(str, s.values())))
def test_parts_are_disjoint_and_cover_the_corpus(corpus: Corpus, settings: dict):
    protocol, folds = folds_of(corpus, **settings)
    by_id = corpus.by_id()
    tested: list[str] = []
    for fold in folds:
        train, dev, test = set(fold.train), set(fold.dev), set(fold.test)
        assert train and dev and test
        assert not (train & dev or train & test or dev & test)
        assert len(train) == len(fold.train) and len(test) == len(fold.test)
        everything = train | dev | test
        assert everything <= set(by_id)
        expected = {u.id for u in corpus.utterances if protocol.keep(u)}
        assert everything == expected  # every kept utterance is used once per fold
        tested += fold.test
        assert fold.meta["protocol"] == settings["type"]
        assert fold.meta["subset"] == settings.get("subset", "all")
        assert fold.meta["speaker_dependent"] is (settings["type"] == "random")
    assert sorted(tested) == sorted(expected)  # each utterance is tested exactly once
    assert [f.name for f in folds] == protocol.fold_names(DatasetInfo(SESSIONS, SPEAKERS))
    _, again = folds_of(corpus, **settings)
    assert [(f.train, f.dev, f.test) for f in again] == [(f.train, f.dev, f.test) for f in folds]


def test_loso_holds_out_one_session(corpus: Corpus):
    _, folds = folds_of(corpus, type="loso")
    by_id = corpus.by_id()
    assert [f.name for f in folds] == list(SESSIONS)
    for fold in folds:
        assert {by_id[i].session for i in fold.test} == {fold.name}
        assert fold.name not in {by_id[i].session for i in fold.train + fold.dev}
        dev_share = len(fold.dev) / (len(fold.dev) + len(fold.train))
        assert dev_share == pytest.approx(0.2, abs=0.01)


def test_dev_speaker_is_held_out_of_training(corpus: Corpus):
    _, folds = folds_of(corpus, type="loso", dev="speaker")
    by_id = corpus.by_id()
    for fold in folds:
        dev_speakers = {by_id[i].speaker for i in fold.dev}
        assert dev_speakers == {fold.meta["dev_speaker"]}
        assert not dev_speakers & {by_id[i].speaker for i in fold.train}
        assert not fold.meta["dev_speaker"].startswith(fold.name)


def test_speaker_protocols_hold_out_speakers(corpus: Corpus):
    by_id = corpus.by_id()
    _, folds = folds_of(corpus, type="loso_speaker")
    assert [f.name for f in folds] == list(SPEAKERS)
    for fold in folds:
        assert {by_id[i].speaker for i in fold.test} == {fold.name}
        assert fold.name not in {by_id[i].speaker for i in fold.train + fold.dev}
    _, folds = folds_of(corpus, type="kfold", k=5)
    assert [f.name for f in folds] == [f"fold{i}" for i in range(1, 6)]
    for fold in folds:
        test_speakers = {by_id[i].speaker for i in fold.test}
        assert len(test_speakers) == 2
        assert not test_speakers & {by_id[i].speaker for i in fold.train + fold.dev}


def test_random_folds_are_stratified_and_speaker_dependent(corpus: Corpus):
    _, folds = folds_of(corpus, type="random", k=5)
    overall = Counter(u.label for u in corpus.utterances)
    by_id = corpus.by_id()
    for fold in folds:
        counts = Counter(by_id[i].label for i in fold.test)
        for label in LABELS:
            assert abs(counts[label] - overall[label] / 5) <= 1
        assert fold.meta["speaker_dependent"] is True
        assert {by_id[i].speaker for i in fold.test} & {by_id[i].speaker for i in fold.train}


def test_dev_split_is_stratified_and_seeded(corpus: Corpus):
    _, folds = folds_of(corpus, type="loso")
    _, other = folds_of(corpus, type="loso", seed=1)
    by_id = corpus.by_id()
    for fold in folds:
        pool = Counter(by_id[i].label for i in fold.train + fold.dev)
        dev = Counter(by_id[i].label for i in fold.dev)
        for label in LABELS:
            assert dev[label] == round(0.2 * pool[label])
    assert [f.test for f in other] == [f.test for f in folds]
    assert [f.dev for f in other] != [f.dev for f in folds]


def test_subset_filters(corpus: Corpus):
    by_id = corpus.by_id()
    for subset, wanted in (("improvised", True), ("scripted", False)):
        _, folds = folds_of(corpus, type="loso", subset=subset)
        used = {i for f in folds for i in f.train + f.dev + f.test}
        assert used and all(by_id[i].meta.get("improvised") is wanted for i in used)
        assert not any(i.endswith("059") for i in used)  # no meta: kept only for 'all'
    _, folds = folds_of(corpus, type="loso")
    assert sum(i.endswith("059") for f in folds for i in f.test) == 10


def test_impossible_settings_are_one_line_errors(corpus: Corpus):
    one_session = Corpus("one", LABELS, [u for u in corpus.utterances if u.session == "Ses01"])
    with pytest.raises(EmoplugError, match="at least two sessions"):
        folds_of(one_session, type="loso")
    with pytest.raises(EmoplugError, match="needs at least 3 speakers"):
        folds_of(one_session, type="kfold", k=3)
    no_meta = Corpus("bare", LABELS, [Utterance("a", "s", "1", label="sad"),
                                       Utterance("b", "t", "2", label="sad")])
    with pytest.raises(EmoplugError, match="no utterance"):
        folds_of(no_meta, type="loso", subset="improvised")


def test_summary_counts_folds_and_skips(corpus: Corpus):
    corpus = Corpus(corpus.name, corpus.labels, corpus.utterances,
                    meta={"excluded": {"label xxx": 3}})
    corpus.skip("missing WAV", "a.wav")
    corpus.skip("missing WAV", "b.wav")
    _, folds = folds_of(corpus, type="loso")
    summary = summarize(corpus, folds)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["total"] == 600 and list(summary["per_label"]) == list(LABELS)
    assert sum(summary["per_label"].values()) == 600
    assert list(summary["per_session"]) == list(SESSIONS)
    assert summary["per_speaker"] == dict.fromkeys(SPEAKERS, 60)
    assert summary["skipped"] == {"missing WAV": {"count": 2, "examples": ["a.wav", "b.wav"]}}
    assert summary["excluded"] == {"label xxx": 3}
    first = summary["folds"][0]
    assert (first["name"], first["test"]) == ("Ses01", 120)
    assert first["train"] + first["dev"] == 480
    assert sum(first["labels"]["test"].values()) == 120
    assert first["meta"]["protocol"] == "loso"
    assert summarize(corpus, folds) == summary
    text = format_summary(summary)
    assert "600 utterances" in text and "missing WAV: 2 (e.g. a.wav, b.wav)" in text
    assert "Ses05" in text and "label xxx" in text
