"""The report's data section: the utterances a run studied and the items its dataset skipped
(unusable) or excluded (on purpose), by reason, as ``plan.json`` records them."""

from __future__ import annotations

from emoplug.report.collect import RunData
from emoplug.report.tables import Section, Table


def data_section(run: RunData) -> Section:
    section = Section("data", "Data",
                      "Utterances the run studied, and the dataset's items left out by reason: "
                      "skipped (unusable: no transcript, an unreadable WAV, a label that "
                      "differs from the label set only in case) and excluded on purpose "
                      "(labels outside the label set). `emoplug data summary` lists examples.")
    data = (run.plan or {}).get("data")
    if not isinstance(data, dict):
        section.empty = ("plan.json records no data counts (the corpus was not read yet, or "
                         "the run predates them).")
        return section
    rows = [[kind, str(reason), str(count)]
            for kind in ("skipped", "excluded")
            for reason, count in sorted((data.get(kind) or {}).items())]
    studied = f"{data.get('utterances', '?')} utterances studied"
    if data.get("synthetic"):
        studied += (" (synthetic, generated data: the numbers of this report show that the "
                    "machinery works, not how well a model recognises emotion)")
    if rows:
        section.tables.append(Table(["Left out", "Reason", "Items"], rows,
                                    f"{studied}; items left out, by reason"))
    else:
        section.empty = f"{studied}; nothing skipped or excluded."
    return section
