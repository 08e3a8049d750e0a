"""CREMA-D's crowd ratings: ``processedResults/tabulatedVotes.csv`` read as labels.

The file (written by the corpus's ``processFinishedResponses.R``) has one row per clip and
kind of presentation. Its first column, unnamed, is ``100000 * queryType + clip number``
(queryType 1 = voice only, 2 = face only, 3 = audio-visual); ``A, D, F, H, N, S`` count the
raters who chose anger, disgust, fear, happy, neutral, sad; ``fileName`` names the clip;
``numResponses``, ``agreement`` (the majority's share), ``emoVote`` (the majority, ties
joined by ``:``) and mean rated levels follow. Labels are computed from the counts.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoplug import EmoplugError
from emoplug_data.tables import csv_rows, read_utf8

VOTES_CSV = Path("processedResults") / "tabulatedVotes.csv"
VOTE_CODES = ("A", "D", "F", "H", "N", "S")
#: queryType of each ``votes_from`` (the first digit of the row id)
QUERY_TYPES = {"voice": 1, "face": 2, "audiovisual": 3}
ROW_ID = "row_id"


@dataclass(frozen=True)
class Vote:
    """One clip's label by the ratings: its emotion, or why it has none (``excluded``), and
    what to keep in the utterance's meta."""

    emotion: str | None
    excluded: str | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class VoteTally:
    """The chosen presentation's vote counts per clip, turned into labels one clip at a
    time; it counts what happened for the data summary."""

    kind: str
    counts: dict[str, dict[str, int]]
    names: dict[str, str]
    ties: str = "exclude"
    min_agreement: float = 0.0
    stats: Counter[str] = field(default_factory=Counter)
    agreements: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.stats.clear()
        self.agreements.clear()

    def vote(self, clip: str, intended: str) -> Vote:
        """The majority label of ``clip`` (``intended``: the emotion of its file name)."""
        counts = self.counts.get(clip)
        total = sum(counts.values()) if counts else 0
        if not total:
            self.stats["no votes"] += 1
            return Vote(None, f"no {self.kind} votes")
        top = max(counts.values())
        winners = [self.names[c] for c in VOTE_CODES if counts[c] == top]
        agreement = top / total
        self.agreements.append(agreement)
        meta = {"votes": {self.names[c]: counts[c] for c in VOTE_CODES},
                "responses": total, "agreement": round(agreement, 4),
                "majority": ":".join(winners)}
        if len(winners) > 1:
            if self.ties == "intended" and intended in winners:
                self.stats["tie broken by the intended emotion"] += 1
                winners = [intended]
            else:
                self.stats["tied majority (excluded)"] += 1
                return Vote(None, f"tied {self.kind} votes", meta)
        if agreement < self.min_agreement:
            self.stats[f"agreement below {self.min_agreement:g} (excluded)"] += 1
            return Vote(None, f"{self.kind} agreement below {self.min_agreement:g}", meta)
        self.stats["labelled by the majority"] += 1
        self.stats["majority = intended emotion"] += winners[0] == intended
        return Vote(winners[0], None, meta)

    def summary(self) -> dict[str, Any]:
        """What ``emoplug data summary`` prints about the label source."""
        mean = sum(self.agreements) / len(self.agreements) if self.agreements else None
        return {"description": f"majority of the {self.kind} ratings "
                               f"({VOTES_CSV.as_posix()}; ties: {self.ties}, min_agreement: "
                               f"{self.min_agreement:g})",
                "counts": {**dict(sorted(self.stats.items())),
                           "mean agreement": None if mean is None else round(mean, 4)}}


def read_votes(path: Path, key: str, kind: str, emotion_codes: dict[str, str],
               ties: str = "exclude", min_agreement: float = 0.0) -> VoteTally:
    """The ``kind`` rows (voice, face or audiovisual) of a tabulated-votes file; a malformed
    file or row is one error naming ``key``, the file and the line. ``emotion_codes`` maps
    the file names' emotion codes (``ANG``) to label names; the votes use their initials."""
    text = read_utf8(path, key)
    header, _, body = text.partition("\n")
    names = next(csv.reader([header]))
    if names and names[0].strip() == "":
        names[0] = ROW_ID  # R writes its row names under an empty column name
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(names)
    wanted = QUERY_TYPES[kind]
    counts: dict[str, dict[str, int]] = {}
    seen_header = False
    for line, row in csv_rows(buffer.getvalue() + "\n" + body, path.name, key=key):
        if not seen_header:
            missing = [c for c in (ROW_ID, *VOTE_CODES, "fileName") if c not in row]
            if missing:
                raise EmoplugError(f"{key}: {path.name} has no column {', '.join(missing)} "
                                   f"(expected the row id, {', '.join(VOTE_CODES)}, fileName)")
            seen_header = True
        where = f"{path.name}:{line}"
        if not row[ROW_ID].strip().isdigit():
            raise EmoplugError(f"{key}: {where}: row id '{row[ROW_ID]}' is not a number "
                               "(100000 x query type + clip number)")
        if int(row[ROW_ID]) // 100000 != wanted:
            continue
        try:
            tally = {c: int(row[c]) for c in VOTE_CODES}
        except ValueError:
            raise EmoplugError(f"{key}: {where}: vote counts {', '.join(VOTE_CODES)} must be "
                               "whole numbers") from None
        clip = row["fileName"].strip()
        if clip in counts:
            raise EmoplugError(f"{key}: {where}: {clip} has a second {kind} row")
        counts[clip] = tally
    initials = {code[0]: name for code, name in emotion_codes.items()}
    return VoteTally(kind, counts, initials, ties, min_agreement)
