"""``--format latex``: the report's tables as LaTeX for a paper.

One file per section (``latex/<section>.tex``), each table a ``table`` float with booktabs
rules (``\\toprule``, ``\\midrule``, ``\\bottomrule``), ``mean ± std`` as ``mean $\\pm$ std``, the
best value of each column a table marks (``Table.best``: highest or lowest) in bold, and a
footnote under the table saying what n counts and which test was used (``Table.note``). Wide
tables shrink to the text width. ``latex/report_tables.tex`` is a standalone document that
inputs them all: ``cd latex && pdflatex report_tables.tex`` compiles it as written (packages:
booktabs, graphicx). The diagnostic sections (missing jobs, data, compute, how training
ended) stay in the Markdown and HTML reports.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path

from emoplug.report.tables import Report, Section, Table

#: sections left out of the LaTeX tables: diagnostics, not results
SKIPPED = frozenset({"missing", "data", "stopping", "compute"})
DOCUMENT = "report_tables.tex"
#: characters LaTeX treats specially, and the text (or math) each becomes
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
            "±": r"$\pm$", "−": r"$-$", "—": "---", "–": "--", "†": r"\dag{}",
            "≥": r"$\geq$", "≤": r"$\leq$", "√": r"$\surd$", "²": r"$^2$", "·": r"$\cdot$",
            "×": r"$\times$", "’": "'", "‘": "`", "“": "``", "”": "''", "…": r"\ldots{}"}
_NUMBER = re.compile(r"^\[?([+-]?\d+(?:\.\d+)?)")


def escape(text: str) -> str:
    """``text`` as LaTeX source: special characters escaped, the report's symbols (±, −, —,
    †, ≥ ...) as LaTeX, any other non-ASCII character folded to ASCII."""
    out = []
    for char in text:
        if char in _SPECIAL:
            out.append(_SPECIAL[char])
        elif ord(char) < 128:
            out.append(char)
        else:
            out.append(unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
                       or "?")
    return "".join(out)


def leading_number(cell: str) -> float:
    """The first number of a cell (the mean of ``71.2 ± 1.5``); ``nan`` when it has none."""
    match = _NUMBER.match(cell.strip())
    return float(match.group(1)) if match else math.nan


def best_rows(table: Table) -> dict[int, set[int]]:
    """Per column index that ``table.best`` names: the candidate rows holding its best value
    (ties all win); the last ``summary_rows`` rows (floors, means) are not candidates."""
    candidates = table.rows[:len(table.rows) - table.summary_rows]
    out: dict[int, set[int]] = {}
    for column, direction in table.best.items():
        if column not in table.columns:
            continue
        index = table.columns.index(column)
        values = {r: leading_number(row[index]) for r, row in enumerate(candidates)}
        finite = [v for v in values.values() if not math.isnan(v)]
        if finite:
            target = max(finite) if direction == "max" else min(finite)
            out[index] = {r for r, v in values.items() if v == target}
    return out


def _align(table: Table) -> str:
    """``l`` for text columns, ``r`` for columns of numbers (dashes allowed)."""
    spec = []
    for index in range(len(table.columns)):
        cells = [row[index].strip() for row in table.rows if row[index].strip() not in ("—", "")]
        numeric = index > 0 and cells and all(not math.isnan(leading_number(c)) or
                                              c.startswith("<") for c in cells)
        spec.append("r" if numeric else "l")
    return "".join(spec)


def table_latex(section: Section, table: Table, number: int) -> str:
    """One table as a ``table`` float: caption, label, booktabs rules, bold best values and
    its footnote."""
    bold = best_rows(table)
    lines = [r"\begin{table}[htbp]", r"\centering",
             rf"\caption{{{escape(table.caption or section.title)}}}",
             rf"\label{{tab:{section.key}-{number}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             rf"\begin{{tabular}}{{{_align(table)}}}", r"\toprule",
             " & ".join(escape(c) for c in table.columns) + r" \\", r"\midrule"]
    summary_from = len(table.rows) - table.summary_rows
    for r, row in enumerate(table.rows):
        if r == summary_from and table.summary_rows:
            lines.append(r"\midrule")
        cells = [rf"\textbf{{{escape(c)}}}" if r in bold.get(i, ()) else escape(c)
                 for i, c in enumerate(row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    note = table.note or section.text
    if table.best:
        note += " Bold: the best value of its column."
    lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize",
              escape(note), r"\end{minipage}", r"\end{table}"]
    return "\n".join(lines)


def write_latex(report: Report, folder: Path) -> Path:
    """Write ``folder/<section>.tex`` for every section with tables, and the standalone
    ``folder/report_tables.tex`` that inputs them; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    for section in report.sections:
        if section.empty or not section.tables or section.key in SKIPPED:
            continue
        body = [f"% {escape(report.title)}: {escape(section.title)} (written by emoplug report)",
                *[table_latex(section, t, i) for i, t in enumerate(section.tables, start=1)]]
        (folder / f"{section.key}.tex").write_text("\n\n".join(body) + "\n", encoding="utf-8")
        inputs.append(section.key)
    document = [r"\documentclass{article}", r"\usepackage[T1]{fontenc}",
                r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\begin{document}",
                *[rf"\input{{{key}}}\clearpage" for key in inputs], r"\end{document}"]
    (folder / DOCUMENT).write_text("\n".join(document) + "\n", encoding="utf-8")
    return folder
