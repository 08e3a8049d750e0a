"""The report's protocol section: each fold's leakage audit, the gap between dev and test,
and, when a run holds several protocols, the same cells compared across them.

The audit (``emoplug.data.audit``) is read from each finished job's ``result.json``: how many
test utterances share their speaker, session, dialog or normalised transcript with train, and
with dev, and how many dev utterances share each with train. A shared transcript counts from
``MIN_TRANSCRIPT_WORDS`` words; shorter shared ones (backchannels) are shown apart.
"""

from __future__ import annotations

from typing import Any

from emoplug.data.audit import AUDIT_KEYS, MIN_TRANSCRIPT_WORDS
from emoplug.report.collect import DONE, CellRecord, RunData
from emoplug.report.select import cell_summary, jobs_cell, reference_protocol
from emoplug.report.stats import Summary, fold_means, summarize
from emoplug.report.tables import DASH, Section, Table, fmt_summary

#: the audit's parts: (key in the audit, what is counted, against what, its size's key)
PARTS = (("train", "test", "train", "test"), ("dev", "test", "dev", "test"),
         ("dev_vs_train", "dev", "train", "dev"))
KEY_TITLES = {"speaker": "speaker", "session": "session", "dialog": "dialog",
              "transcript": f"transcript (≥ {MIN_TRANSCRIPT_WORDS} words)",
              "short_transcript": f"short transcript (< {MIN_TRANSCRIPT_WORDS} words)"}
DEFAULT = "(recipe protocol)"


def fold_audits(run: RunData) -> dict[tuple[str | None, str], dict[str, Any]]:
    """The audit of each (protocol name, fold), from the first finished job that has one."""
    protocol_of = {c.id: c.protocol_name for c in run.cells}
    audits: dict[tuple[str | None, str], dict[str, Any]] = {}
    for job in sorted(run.jobs, key=lambda j: j.id):
        audit = (job.result or {}).get("audit")
        if job.status == DONE and isinstance(audit, dict):
            audits.setdefault((protocol_of[job.cell], job.fold), audit)
    return audits


def _total(audit: dict[str, Any], part: str) -> int:
    """The utterances a part counts: the fold's test set, or its dev set (``dev_vs_train``)."""
    if part == "dev_vs_train":
        return (audit.get(part) or {}).get("dev") or 0
    return audit.get("test") or 0


def _share(audit: dict[str, Any], part: str, key: str) -> str:
    """``12 (15.0%)`` of the utterances the part counts; a dash when the corpus lacks the key
    (or the audit predates it)."""
    count, total = (audit.get(part) or {}).get(key), _total(audit, part)
    if count is None:
        return DASH
    return f"{count} ({100 * count / total:.1f}%)" if total else str(count)


def _shares(run: RunData, protocol: str | None, part: str, key: str) -> Summary:
    """Mean ± std over folds of the share of the part's utterances sharing ``key``."""
    values = []
    for (name, _), audit in fold_audits(run).items():
        count, total = (audit.get(part) or {}).get(key), _total(audit, part)
        if name == protocol and count is not None and total:
            values.append(count / total)
    return summarize(values)


def protocol_section(run: RunData) -> Section:
    section = Section("protocol", "Protocol and leakage",
                      "What each fold's test utterances share with its training and dev parts, "
                      "and its dev utterances with train (utterances whose speaker, session, "
                      "dialog or normalised transcript also occurs there; a dash: the corpus "
                      "does not record it), and each cell's dev − test gap in UA: an "
                      "optimistic dev split (one that shares speakers or script lines with "
                      "train) shows as a large positive gap.")
    audits = fold_audits(run)
    if audits:
        ordered = sorted(audits.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
        for part, counted, against, size in PARTS:
            rows = [[name or DEFAULT, fold, str(_total(audit, part) if part == "dev_vs_train"
                                                else audit.get("test", DASH)),
                     *[_share(audit, part, key) for key in AUDIT_KEYS]]
                    for (name, fold), audit in ordered]
            section.tables.append(Table(
                ["Protocol", "Fold", size.capitalize(), *[KEY_TITLES[k] for k in AUDIT_KEYS]],
                rows, f"Leakage audit: {counted} utterances sharing each with {against}"))
        section.notes.append(
            f"A shared transcript counts from {MIN_TRANSCRIPT_WORDS} words after normalisation "
            "(lower case, bracketed events such as [LAUGHTER] dropped, punctuation removed "
            "except apostrophes inside words): a repeated script line, not a shared \"yeah\"; "
            "shorter shared transcripts are counted apart.")
    else:
        section.notes.append("No job recorded a leakage audit (results written before the "
                             "audit existed).")
    gaps = [[c.label, jobs_cell(c), dev_kind(c), fmt_summary(cell_summary(c, "ua", "dev"), "ua"),
             fmt_summary(cell_summary(c, "ua"), "ua"), fmt_summary(dev_test_gap(c), "ua")]
            for c in run.cells if c.done]
    if gaps:
        section.tables.append(Table(["Cell", "Jobs", "Dev", "Dev UA", "Test UA",
                                     "Dev − test UA"], gaps,
                                    "Dev − test gap (mean ± std over folds)"))
    _protocols_compared(run, section)
    if not section.tables:
        section.empty = "No finished job."
    return section


def dev_kind(cell: CellRecord) -> str:
    """The dev the cell's jobs chose on (``session``, ``inner_folds`` ...), as recorded."""
    kinds = sorted({str((j.result.get("protocol") or {}).get("dev", DASH)) for j in cell.done})
    return ", ".join(kinds) or DASH


def dev_test_gap(cell: CellRecord) -> Summary:
    """Per fold, dev UA − test UA (seeds averaged first); mean ± std over folds."""
    dev, test = fold_means(cell.values("ua", "dev")), fold_means(cell.values("ua"))
    return summarize([dev[f] - test[f] for f in sorted(set(dev) & set(test))])


def _protocols_compared(run: RunData, section: Section) -> None:
    """When cells run under several protocols: each cell's test UA per protocol, and each
    protocol's audit (mean share of test utterances over folds) beside it."""
    names = sorted({c.protocol_name for c in run.cells if c.done and c.names is not None},
                   key=lambda n: (n is not None, n or ""))
    if len(names) < 2:
        return
    listed = [p for p in ((run.plan or {}).get("protocols") or []) if p in names]
    names = listed + [n for n in names if n not in listed]
    by_base: dict[str, dict[str | None, CellRecord]] = {}
    for cell in run.cells:
        if cell.done and cell.names is not None:
            by_base.setdefault(_base_label(cell), {})[cell.protocol_name] = cell
    rows = [[base, *[fmt_summary(cell_summary(cells[n], "ua"), "ua") if n in cells else DASH
                     for n in names]] for base, cells in by_base.items()]
    columns = [n or DEFAULT for n in names]
    section.tables.append(Table(["Cell", *[f"{c}: test UA" for c in columns]], rows,
                                "The same cells under each protocol (mean ± std over folds)"))
    audit_rows = [[f"{counted} ~ {against}: {KEY_TITLES[key]}",
                   *[fmt_summary(_shares(run, n, part, key), "ua") for n in names]]
                  for part, counted, against, _ in PARTS for key in AUDIT_KEYS]
    section.tables.append(Table(["Utterances sharing …", *columns], audit_rows,
                                "Each protocol's audit: % of test utterances sharing each "
                                "with train / dev, and of dev utterances with train (mean ± "
                                "std over folds)"))
    reference = reference_protocol(run)
    section.notes.append(f"Every other section compares the cells of "
                         f"{reference or 'the recipe protocol'} only.")


def _base_label(cell: CellRecord) -> str:
    """The cell's label without its protocol suffix (``…@protocol``)."""
    return cell.label.rsplit("@", 1)[0] if cell.protocol_name else cell.label
