"""CREMA-D labelled by its crowd ratings (processedResults/tabulatedVotes.csv) on a synthetic
tree in the published layout."""

from __future__ import annotations

import csv
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from emoplug import EmoplugError
from emoplug.cli import main
from emoplug.registry import get_registry

#: the header of the published file (R's unnamed row-name column first)
HEADER = ["", "A", "D", "F", "H", "N", "S", "fileName", "numResponses", "agreement", "emoVote",
          "meanEmoResp", "meanAngerResp", "meanDisgustResp", "meanFearResp", "meanHappyResp",
          "meanNeutralResp", "meanSadResp", "medianEmoResp", "meanEmoRespNorm",
          "meanAngerRespNorm", "meanDisgustRespNorm", "meanFearRespNorm", "meanHappyRespNorm",
          "meanNeutralRespNorm", "meanSadRespNorm", "medianEmoRespNorm"]
#: (query type, clip number, file, counts A D F H N S)
VOTES = [
    (1, 1, "1001_DFA_ANG_XX", (6, 2, 0, 0, 1, 0)),   # agrees with the file name
    (1, 2, "1001_IEO_HAP_HI", (0, 0, 0, 2, 6, 0)),   # heard as neutral
    (1, 3, "1002_TSI_NEU_XX", (0, 0, 0, 0, 10, 0)),
    (1, 4, "1002_WSI_SAD_LO", (0, 0, 0, 0, 4, 4)),   # tied: neutral and sad
    (1, 6, "1091_IWL_DIS_XX", (2, 3, 2, 0, 2, 0)),   # weak majority (3 of 9)
    (2, 1, "1001_DFA_ANG_XX", (0, 0, 0, 9, 0, 0)),   # the face alone looks happy
    (3, 5, "1091_ITH_FEA_MD", (0, 0, 7, 0, 1, 0)),   # no voice row at all
]
FILES = ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TSI_NEU_XX", "1002_WSI_SAD_LO",
         "1091_ITH_FEA_MD", "1091_IWL_DIS_XX"]


def vote_row(query: int, clip: int, name: str, counts: tuple[int, ...]) -> list[object]:
    total = sum(counts)
    top = max(counts)
    majority = ":".join(c for c, n in zip("ADFHNS", counts, strict=True) if n == top)
    return [str(100000 * query + clip), *counts, name, total, top / total, majority, 55.0,
            *([-1] * 6), 54, 50.1, *([-1] * 6), 52.0]


def write_votes(path: Path, rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(HEADER)
        writer.writerows(rows)


@pytest.fixture
def crema(tmp_path: Path) -> Path:
    root = tmp_path / "CREMA-D"
    (root / "AudioWAV").mkdir(parents=True)
    for stem in FILES:
        soundfile.write(str(root / "AudioWAV" / f"{stem}.wav"),
                        np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    write_votes(root / "processedResults" / "tabulatedVotes.csv",
                [vote_row(*v) for v in VOTES])
    return root


def load(root: Path, tmp_path: Path, **settings):
    dataset = get_registry().build("dataset", {"type": "cremad", "root": str(root),
                                               **settings})
    return dataset.load(need_audio=False, cache_dir=tmp_path / "cache")


def test_votes_label_each_clip_by_the_majority_of_its_voice_ratings(crema, tmp_path):
    corpus = load(crema, tmp_path, label="votes")
    labels = {u.id: u.label for u in corpus.utterances}
    assert labels == {"1001_DFA_ANG_XX": "angry", "1001_IEO_HAP_HI": "neutral",
                      "1002_TSI_NEU_XX": "neutral", "1091_IWL_DIS_XX": "disgusted"}
    heard = corpus.by_id()["1001_IEO_HAP_HI"]
    assert heard.meta["emotion"] == "happy"  # the intended emotion stays in meta
    assert heard.meta["votes"] == {"angry": 0, "disgusted": 0, "fearful": 0, "happy": 2,
                                   "neutral": 6, "sad": 0}
    assert (heard.meta["responses"], heard.meta["agreement"], heard.meta["majority"]) == (
        8, 0.75, "neutral")
    assert corpus.meta["excluded"] == {"tied voice votes": 1, "no voice votes": 1}
    source = corpus.meta["label_source"]
    assert source["description"].startswith("majority of the voice ratings")
    assert source["counts"] == {"labelled by the majority": 4,
                                "majority = intended emotion": 3, "no votes": 1,
                                "tied majority (excluded)": 1,
                                "mean agreement": round((6 / 9 + 0.75 + 1 + 0.5 + 3 / 9) / 5, 4)}
    # the published-counts check still counts the intended emotions of the files found
    assert corpus.meta["published_counts"]["present"] == 6
    by_name = load(crema, tmp_path)
    assert by_name.by_id()["1001_IEO_HAP_HI"].label == "happy"
    assert "label_source" not in by_name.meta


def test_votes_from_other_presentations_ties_and_agreement(crema, tmp_path):
    face = load(crema, tmp_path, label="votes", votes_from="face")
    assert {u.id: u.label for u in face.utterances} == {"1001_DFA_ANG_XX": "happy"}
    seen = load(crema, tmp_path, label="votes", votes_from="audiovisual")
    assert {u.id: u.label for u in seen.utterances} == {"1091_ITH_FEA_MD": "fearful"}
    tie = load(crema, tmp_path, label="votes", ties="intended")
    assert tie.by_id()["1002_WSI_SAD_LO"].label == "sad"
    strict = load(crema, tmp_path, label="votes", min_agreement=0.5)
    assert "1091_IWL_DIS_XX" not in strict.by_id()
    assert strict.meta["excluded"]["voice agreement below 0.5"] == 1


def test_vote_settings_without_label_votes_are_refused(crema):
    problems = get_registry().build("dataset", {"type": "cremad", "root": str(crema),
                                                "ties": "intended"}).check()
    assert [(p.setting, p.message) for p in problems] == [
        ("ties", "applies only with label: votes")]


def test_bad_votes_files_are_one_error_naming_file_and_line(crema, tmp_path):
    votes = crema / "processedResults" / "tabulatedVotes.csv"
    rows = [vote_row(*v) for v in VOTES]
    rows[2][3] = "many"
    write_votes(votes, rows)
    with pytest.raises(EmoplugError, match=r"^dataset.root: tabulatedVotes.csv:4: vote counts "
                                           r"A, D, F, H, N, S must be whole numbers"):
        load(crema, tmp_path, label="votes")
    rows[2][3], rows[1][0] = 0, "row2"
    write_votes(votes, rows)
    with pytest.raises(EmoplugError, match=r"tabulatedVotes.csv:3: row id 'row2' is not a"):
        load(crema, tmp_path, label="votes")
    votes.write_text(votes.read_text().replace(",52.0\n", ",52.0,9\n", 1))
    with pytest.raises(EmoplugError, match=r"tabulatedVotes.csv line 2: 28 fields, the header "
                                           r"has 27"):
        load(crema, tmp_path, label="votes")
    votes.unlink()
    with pytest.raises(EmoplugError, match=f"dataset.root: {votes} does not exist"):
        load(crema, tmp_path, label="votes")
    elsewhere = tmp_path / "votes.csv"
    write_votes(elsewhere, [vote_row(*v) for v in VOTES])
    assert len(load(crema, tmp_path, label="votes", votes_path=str(elsewhere)).utterances) == 4


def test_summary_says_where_the_labels_come_from(crema, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""
        name: crema_votes
        dataset: {{type: cremad, root: {crema}, label: votes, ties: intended,
                  labels: [angry, neutral, sad, disgusted]}}
        protocol: {{type: loso}}
        audio: {{mfcc: {{type: mfcc, hop_ms: 20}}}}
        grid: {{audio: [mfcc], approach: [direct]}}
        cache_dir: {tmp_path / "cache"}
        """))
    summary = CliRunner().invoke(main, ["data", "summary", str(path)])
    assert summary.exit_code == 0, summary.output
    assert ("labels from: majority of the voice ratings (processedResults/tabulatedVotes.csv; "
            "ties: intended, min_agreement: 0)") in summary.stdout
    assert re.search(r"\n  tie broken by the intended emotion +1\n", summary.stdout)
    assert "differs from the published counts (6 of 7442 files present)" in summary.stdout
    as_json = json.loads(CliRunner().invoke(main, ["data", "summary", str(path), "--json"]).stdout)
    assert as_json["label_source"]["counts"]["tie broken by the intended emotion"] == 1
