"""The leakage audit of folds (speaker, session, dialog, transcript overlap with train and dev)
on corpora with known overlaps, the speaker-leak warning, and dev held out by session."""

from __future__ import annotations

import pytest

from emoplug import Corpus, EmoplugError, Fold, Utterance
from emoplug.data.audit import (
    MIN_TRANSCRIPT_WORDS,
    audit_fold,
    normalise_transcript,
    speaker_leak_warning,
)
from emoplug.data.summary import format_summary, summarize
from emoplug.registry import get_registry

LABELS = ("neutral", "happy")


def utt(uid: str, speaker: str, session: str, text: str | None, dialog: str | None = None,
        label: str = "neutral") -> Utterance:
    meta = {} if dialog is None else {"dialog": dialog}
    return Utterance(uid, speaker, session, text=text, label=label, meta=meta)


def test_normalised_transcripts():
    assert normalise_transcript("Oh,  I can't   BELIEVE it!") == "oh i can't believe it"
    assert normalise_transcript("Well... okay.") == normalise_transcript("well okay")
    assert normalise_transcript("?!") is None and normalise_transcript(None) is None
    # apostrophes inside words stay: "we'll" is not "well"; curly ones are the same
    assert normalise_transcript("We'll see.") != normalise_transcript("Well, see.")
    assert normalise_transcript("We\u2019ll see") == "we'll see"
    assert normalise_transcript("'So' he said") == "so he said"  # quotes go
    # bracketed events are dropped, not turned into words
    assert normalise_transcript("[LAUGHTER]") is None
    assert normalise_transcript("Yeah. [BREATHING] <sil>") == "yeah"


def test_audit_counts_known_overlaps():
    """A shared transcript counts from MIN_TRANSCRIPT_WORDS words; a shared backchannel is a
    short overlap, counted on its own; dev is audited against train too."""
    assert MIN_TRANSCRIPT_WORDS == 4
    by_id = {u.id: u for u in [
        # train: speakers A and B, session 1, dialogs d1 and d2
        utt("t1", "A", "S1", "Hello there, how are you?", "d1"),
        utt("t2", "B", "S1", "Yeah.", "d2"),
        utt("t3", "B", "S1", "[LAUGHTER] Okay.", "d2"),
        # dev: speaker C, session 2, dialog d3; one line repeats train's, one is a backchannel
        utt("v1", "C", "S2", "we did it at last", "d3"),
        utt("v2", "C", "S2", "how are you", "d3"),
        utt("v3", "C", "S2", "Hello there, how are you!", "d3"),
        utt("v4", "C", "S2", "yeah [LAUGHTER]", "d3"),
        # test: A again (speaker + session + dialog + transcript leak), a new speaker whose
        # line repeats a dev line, a backchannel also said in train, a clean one
        utt("x1", "A", "S1", "hello THERE how are you", "d1"),
        utt("x2", "D", "S3", "We did it at last!", "d4"), utt("x3", "E", "S3", "yeah", "d4"),
        utt("x4", "E", "S3", "something new entirely here", "d4"),
        utt("x5", "E", "S3", "[LAUGHTER]", "d4"),  # an event alone: no transcript
    ]}
    fold = Fold("f", train=("t1", "t2", "t3"), dev=("v1", "v2", "v3", "v4"),
                test=("x1", "x2", "x3", "x4", "x5"))
    audit = audit_fold(fold, by_id)
    assert audit == {"test": 5,
                     "train": {"speaker": 1, "session": 1, "dialog": 1, "transcript": 1,
                               "short_transcript": 1},
                     "dev": {"speaker": 0, "session": 0, "dialog": 0, "transcript": 2,
                             "short_transcript": 1},
                     "dev_vs_train": {"dev": 4, "speaker": 0, "session": 0, "dialog": 0,
                                      "transcript": 1, "short_transcript": 1}}


def test_dialog_unknown_is_none_not_zero():
    by_id = {u.id: u for u in [utt("a", "A", "S1", "x"), utt("b", "B", "S2", "x")]}
    audit = audit_fold(Fold("f", ("a",), (), ("b",)), by_id)
    assert audit["train"]["dialog"] is None and audit["train"]["transcript"] == 0
    assert audit["train"]["short_transcript"] == 1
    assert audit["dev"] == {"speaker": 0, "session": 0, "dialog": None, "transcript": 0,
                            "short_transcript": 0}


def speakers_corpus() -> Corpus:
    utterances = []
    for session in ("S1", "S2", "S3", "S4"):
        for gender in "FM":
            for i in range(8):
                utterances.append(utt(f"{session}{gender}_d_{gender}{i:02d}", session + gender,
                                      session, f"line {i}", f"{session}{gender}_d",
                                      LABELS[i % 2]))
    return Corpus("toy", LABELS, utterances)


def audited(corpus: Corpus, **settings) -> list[Fold]:
    protocol = get_registry().build("protocol", settings)
    by_id = corpus.by_id()
    return [Fold(f.name, f.train, f.dev, f.test, {**f.meta, "audit": audit_fold(f, by_id)})
            for f in protocol.folds(corpus)]


def test_random_split_leaks_speakers_and_warns_loso_does_not():
    corpus = speakers_corpus()
    loso = audited(corpus, type="loso")
    assert all(f.meta["audit"]["train"]["speaker"] == 0 for f in loso)
    assert all(f.meta["audit"]["train"]["session"] == 0 for f in loso)
    # "line i" recurs in every session: LOSO removes speakers, not repeated transcripts (two
    # words: a short overlap, not counted as a shared transcript)
    assert all(f.meta["audit"]["train"]["short_transcript"] == 16 for f in loso)
    assert all(f.meta["audit"]["train"]["transcript"] == 0 for f in loso)
    assert speaker_leak_warning("loso", loso) is None
    random = audited(corpus, type="random", k=4)
    assert sum(f.meta["audit"]["train"]["speaker"] for f in random) == 64
    warning = speaker_leak_warning("random", random)
    assert warning is not None and "\n" not in warning
    assert "4 of 4 folds" in warning and "64 of 64 test utterances" in warning


def test_dev_session_holds_out_a_whole_rotating_session():
    corpus = speakers_corpus()
    folds = audited(corpus, type="loso", dev="session")
    by_id = corpus.by_id()
    assert [f.meta["dev_session"] for f in folds] == ["S2", "S3", "S4", "S1"]
    for fold in folds:
        dev = {by_id[i].session for i in fold.dev}
        assert dev == {fold.meta["dev_session"]}
        train = [by_id[i] for i in fold.train]
        assert not {u.speaker for u in train} & {by_id[i].speaker for i in fold.dev}
        assert not {u.meta["dialog"] for u in train} & {by_id[i].meta["dialog"] for i in fold.dev}
        assert fold.meta["audit"]["dev"]["speaker"] == 0
    random_dev = audited(corpus, type="loso", dev="random")
    assert all(f.meta["audit"]["dev"]["speaker"] == 0 for f in random_dev)  # test ≠ dev
    one = Corpus("one", LABELS, [u for u in corpus.utterances if u.session in ("S1", "S2")])
    with pytest.raises(EmoplugError, match="dev: session needs at least two training sessions"):
        audited(one, type="loso", dev="session")


def test_data_summary_shows_the_audit():
    corpus = speakers_corpus()
    folds = audited(corpus, type="random", k=4)
    summary = summarize(corpus, folds)
    assert summary["folds"][0]["meta"]["audit"]["train"]["speaker"] == 16
    text = format_summary(summary)
    assert "leakage audit" in text and "train:speaker" in text and "dev:transcript" in text
    assert "audit=" not in text  # the audit is a table, not a setting
