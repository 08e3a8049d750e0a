"""The report's "Text from speech" section: how good the speech recogniser's transcripts are
(word error rate against the gold ones) and what reading them instead of the gold ones costs
each cell (its twin on gold transcripts, paired at the fold level)."""

from __future__ import annotations

from typing import Any

from emoplug.report.collect import CellRecord, JobRecord, RunData
from emoplug.report.comparisons import differing_keys, paired_cells, paired_table
from emoplug.report.select import cell_summary, comparable, jobs_cell
from emoplug.report.stats import fold_summary
from emoplug.report.tables import DASH, Section, Table, fmt_diff, fmt_summary

#: the text settings in which an ASR cell differs from its twin on gold transcripts
SOURCE_KEYS = frozenset({("text", "source"), ("text", "asr")})


def reads_asr(cell: CellRecord) -> bool:
    """Whether the cell's text encoder reads transcripts made from speech."""
    return (cell.configs.get("text") or {}).get("source") == "asr"


def gold_twin(cell: CellRecord, cells: list[CellRecord]) -> CellRecord | None:
    """The cell that differs from the ASR cell ``cell`` only in reading gold transcripts."""
    for other in cells:
        if not reads_asr(other) and other.configs.get("text") is not None and \
                set(differing_keys(cell, other)) <= SOURCE_KEYS:
            return other
    return None


def test_wer(job: JobRecord) -> float | None:
    """The word error rate of a finished job's test transcripts (None without gold ones)."""
    scored = ((job.result.get("transcripts") or {}).get("wer") or {}).get("test")
    return float(scored["wer"]) if isinstance(scored, dict) else None


def recogniser_label(cell: CellRecord) -> str:
    """``whisper openai/whisper-small (en)``: the recogniser type, checkpoint and language."""
    asr: dict[str, Any] = (cell.configs.get("text") or {}).get("asr") or {}
    language = f" ({asr['language']})" if asr.get("language") else ""
    return f"{asr.get('type', '?')} {asr.get('pretrained', '')}".strip() + language


def transcripts_section(run: RunData) -> Section:
    section = Section("transcripts", "Text from speech",
                      "Cells whose text encoder reads transcripts made by a speech recogniser "
                      "(`text.source: asr`). WER: word error rate of the test transcripts "
                      "against the corpus's gold ones (lower-cased, punctuation removed; "
                      "mean ± std over folds). Each is paired with its twin reading the gold "
                      "transcripts (same settings otherwise): A = gold, B = ASR, so A − B > 0 "
                      "is what recognition errors cost.")
    cells = comparable(run)
    heard = [c for c in cells if reads_asr(c)]
    if not heard:
        section.empty = "No cell reads ASR transcripts (a text encoder with `source: asr`)."
        return section
    rows, comparisons = [], []
    for cell in heard:
        twin = gold_twin(cell, cells)
        wer = fold_summary({(j.fold, j.seed): test_wer(j) for j in cell.done})
        row = [cell.label, recogniser_label(cell), jobs_cell(cell), fmt_summary(wer, "wer"),
               fmt_summary(cell_summary(cell, "ua"), "ua")]
        if twin is None:
            rows.append([*row, "no twin in this run", DASH, DASH])
            continue
        rows.append([*row, twin.label, fmt_summary(cell_summary(twin, "ua"), "ua"),
                     fmt_diff(paired_cells(run, twin, cell, "ua"), "ua")])
        comparisons.append((f"{twin.label} vs {cell.label}", twin, cell))
    section.tables.append(Table(
        ["ASR cell", "Speech recogniser", "Jobs", "WER % (test)", "UA (test)", "Gold twin",
         "Gold UA (test)", "Gold − ASR UA [95% CI]"], rows,
        note="n = folds; WER and UA as mean ± sample std over the fold means; the "
             "difference is paired by fold (its test below).", best={"WER % (test)": "min"}))
    if any(test_wer(j) is None for c in heard for j in c.done):
        section.notes.append("A dash for WER: the corpus has no gold transcript for the test "
                             "utterances, so the transcripts cannot be scored.")
    if ((run.plan or {}).get("data") or {}).get("synthetic"):
        section.notes.append("The corpus is synthetic (generated demo data, whose speech is not "
                             "words): these numbers show that the machinery works, not how "
                             "well a speech recogniser's transcripts serve emotion recognition.")
    if comparisons:
        paired_table(run, section, comparisons, "Gold vs ASR")
    return section
