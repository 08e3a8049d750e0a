"""The ``iemocap`` dataset: reads an ``IEMOCAP_full_release`` folder in its original layout.

Labels and averaged V/A/D come from the EmoEvaluation summary lines, text from the
transcriptions, audio from ``sentences/wav``. An utterance is kept when its label is in the
label set and it has a transcript (and, when audio is needed, a readable WAV).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from emoplug import (
    ComponentConfig,
    Corpus,
    Dataset,
    DatasetInfo,
    EmoplugError,
    SettingError,
    Utterance,
)
from emoplug_data.common import audio_problem, count_excluded

#: IEMOCAP's category codes and the label names emoplug uses for them.
CODE_NAMES: dict[str, str] = {
    "neu": "neutral", "hap": "happy", "exc": "excited", "ang": "angry", "sad": "sad",
    "fru": "frustrated", "sur": "surprised", "fea": "fearful", "dis": "disgusted",
    "oth": "other",
}

#: Each label set: the labels kept (in this order) and the default merges.
LABEL_SETS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "four_class": (("neutral", "happy", "angry", "sad"), {"excited": "happy"}),
    "six_class": (("neutral", "happy", "angry", "sad", "frustrated", "excited"), {}),
    "all": (tuple(CODE_NAMES.values()), {}),
}

SESSIONS = tuple(f"Ses0{i}" for i in range(1, 6))
SPEAKERS = tuple(f"{s}_{g}" for s in SESSIONS for g in ("F", "M"))

# "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]"
_SUMMARY = re.compile(
    r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\w+)\s+"
    r"\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]\s*$")
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
_TRANSCRIPT = re.compile(r"^(Ses\S+)\s+\[[^\]]*\]:\s?(.*)$")
# "Ses01F_impro01_M000": session 01, dialog Ses01F_impro01, speaker M (the last F/M).
_UTT_ID = re.compile(r"^(Ses0\d)[FM]_.*_([FM])[^_FM]*$")


class IemocapConfig(ComponentConfig):
    root: Path = Field(description="the IEMOCAP_full_release folder (or the folder holding it)")
    label_set: Literal["four_class", "six_class", "all"] = "four_class"
    labels: tuple[str, ...] | None = Field(
        None, description="labels kept, in this order; default: those of label_set")
    merge: dict[str, str] | None = Field(
        None, description="label (code or name) -> label it counts as; replaces the label "
                          "set's merges (four_class: {excited: happy})")


class IemocapDataset(Dataset):
    """IEMOCAP (Busso et al., 2008) from an ``IEMOCAP_full_release`` tree."""

    name: ClassVar[str] = "iemocap"
    location_fields: ClassVar[tuple[str, ...]] = ("root",)
    Config: ClassVar[type[IemocapConfig]] = IemocapConfig

    def describe(self) -> DatasetInfo:
        return DatasetInfo(sessions=SESSIONS, speakers=SPEAKERS)

    def check(self) -> list[SettingError]:
        """A ``merge`` onto a label outside the kept labels would drop the merged class."""
        kept, _ = self.label_plan()
        return [SettingError(f"merge.{source}", f"'{target}' is not a kept label "
                                                f"({', '.join(kept)}); the utterances merged "
                                                "onto it would all be left out")
                for source, target in (self.config.merge or {}).items()
                if CODE_NAMES.get(target, target) not in kept]

    def label_plan(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """The labels kept and the mapping from every IEMOCAP code to its final label."""
        kept, merges = LABEL_SETS[self.config.label_set]
        if self.config.labels is not None:
            kept = self.config.labels
        if self.config.merge is not None:
            merges = {CODE_NAMES.get(k, k): CODE_NAMES.get(v, v)
                      for k, v in self.config.merge.items()}
        mapping = {code: merges.get(label, label) for code, label in CODE_NAMES.items()}
        return kept, mapping

    def root(self) -> Path:
        root = self.config.root.expanduser()
        if (root / "IEMOCAP_full_release").is_dir():
            root = root / "IEMOCAP_full_release"
        return root

    def load(self, *, need_audio: bool, cache_dir: Path) -> Corpus:
        root = self.root()
        if not root.is_dir():
            raise EmoplugError(f"dataset.root: {root} does not exist" if not root.exists()
                               else f"dataset.root: {root} is not a folder")
        sessions = sorted(p for p in root.glob("Session[1-5]") if (p / "dialog").is_dir())
        if not sessions:
            raise EmoplugError(f"dataset.root: {root} is not an IEMOCAP_full_release folder "
                               "(no Session1..Session5/dialog inside)")
        kept, mapping = self.label_plan()
        corpus = Corpus("iemocap", tuple(kept), [], avd_scale=(1.0, 5.0),
                        meta={"root": str(root), "label_set": self.config.label_set})
        for session_dir in sessions:
            for eval_file in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
                if eval_file.name.startswith("."):
                    continue
                self._read_dialog(session_dir, eval_file, kept, mapping, need_audio, corpus)
        return corpus

    def _read_dialog(self, session_dir: Path, eval_file: Path, kept: tuple[str, ...],
                     mapping: dict[str, str], need_audio: bool, corpus: Corpus) -> None:
        dialog = eval_file.stem
        transcripts = read_transcripts(
            session_dir / "dialog" / "transcriptions" / eval_file.name, corpus)
        wav_dir = session_dir / "sentences" / "wav" / dialog
        for line_no, line in enumerate(read_lines(eval_file), start=1):
            if not line.startswith("["):
                continue  # header, blank separators and the per-annotator lines
            where = f"{eval_file.name}:{line_no}"
            match = _SUMMARY.match(line)
            id_match = _UTT_ID.match(match.group(3)) if match else None
            if match is None or id_match is None:
                corpus.skip("malformed EmoEvaluation line", where)
                continue
            start, end, utt_id, code = match.group(1, 2, 3, 4)
            if code == "xxx":
                count_excluded(corpus, "label xxx (annotators disagree)")
                continue
            label = mapping.get(code)
            if label not in kept:
                count_excluded(corpus, f"label {code} outside the label set")
                continue
            text = transcripts.get(utt_id)
            if not text:
                corpus.skip("no transcript", utt_id)
                continue
            wav = wav_dir / f"{utt_id}.wav"
            problem = audio_problem(wav, corpus) if need_audio else None
            if problem:
                corpus.skip(problem, str(wav))
                continue
            session, gender = id_match.groups()
            corpus.utterances.append(Utterance(
                id=utt_id, speaker=f"{session}_{gender}", session=session, text=text,
                audio=str(wav), label=label,
                avd=tuple(float(v) for v in match.group(5, 6, 7)),
                meta={"dialog": dialog, "gender": gender, "improvised": "impro" in dialog,
                      "start": float(start), "end": float(end), "code": code}))


def read_lines(path: Path) -> list[str]:
    """The lines of a text file without line endings (LF or CRLF)."""
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def read_transcripts(path: Path, corpus: Corpus) -> dict[str, str]:
    """``utt_id -> text`` from one transcription file.

    Lines without an utterance id (``M: Yeah.``) belong to no labelled utterance and are
    ignored; a line that starts like an id but does not parse is counted as malformed.
    """
    if not path.is_file():
        return {}
    transcripts: dict[str, str] = {}
    for line_no, line in enumerate(read_lines(path), start=1):
        line = line.strip()
        match = _TRANSCRIPT.match(line)
        if match:
            transcripts[match.group(1)] = match.group(2).strip()
        elif line.startswith("Ses"):
            corpus.skip("malformed transcription line", f"{path.name}:{line_no}")
    return transcripts
