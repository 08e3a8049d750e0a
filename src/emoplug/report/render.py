"""Writers: ``report.md`` (links figures/), ``report.html`` (one self-contained file, figures
embedded as base64 PNG), ``results.csv`` (one row per job, test and dev metrics) and
``cells.csv`` (one row per cell, statistics over folds). The CSV files use plain column names
and empty strings for absent values, so ``pandas.read_csv`` reads them as they are.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import re
from pathlib import Path
from typing import Any

from emoplug.report.collect import AXES, FAILED, CellRecord, JobRecord, RunData
from emoplug.report.predictions import bootstrap_ua
from emoplug.report.stats import fold_summary, seed_spread
from emoplug.report.tables import CLASS_METRICS, Report, Section, Table
from emoplug.types import AVD_NAMES

#: figure stem -> {"png": path, "svg": path}
FigurePaths = dict[str, dict[str, Path]]


# -- Markdown ---------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = [f"**{table.caption}**", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return [*lines, ""]


def to_markdown(report: Report, figures: FigurePaths, base: Path) -> str:
    """The report as Markdown; figure links are relative to ``base`` (the report's folder)."""
    lines = [f"# {report.title}", "", *[f"- {line}" for line in report.summary], ""]
    for section in report.sections:
        lines += [f"## {section.title}", "", section.text, ""]
        if section.empty:
            lines += [f"_{section.empty}_", ""]
            continue
        for table in section.tables:
            lines += _md_table(table)
        for chart, stem in zip(section.charts, section.figure_stems(), strict=True):
            png = figures[stem]["png"].relative_to(base).as_posix()
            svg = figures[stem]["svg"].relative_to(base).as_posix()
            lines += [f"![{chart.title}]({png})", "", f"Figure: [{png}]({png}), [{svg}]({svg})",
                      ""]
        lines += [*(f"_{note}_" for note in section.notes), ""] if section.notes else []
    return "\n".join(lines).rstrip() + "\n"


# -- HTML -------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
td.short { white-space: nowrap; }
.scroll { overflow-x: auto; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
caption { font-weight: bold; text-align: left; padding: 4px 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.empty, .note { color: #555; font-style: italic; }
nav ol { columns: 2; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _inline(text: str) -> str:
    """Escape ``text`` and turn ``backticks`` into <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def _html_cell(text: str) -> str:
    """A table cell; short ones (numbers, labels) do not wrap, long ones (errors) do."""
    short = ' class="short"' if len(text) <= 40 else ""
    return f"<td{short}>{html.escape(text)}</td>"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>"
                   for row in table.rows)
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return (f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _html_section(section: Section, figures: FigurePaths) -> str:
    parts = [f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>',
             f"<p>{_inline(section.text)}</p>"]
    if section.empty:
        parts.append(f'<p class="empty">{html.escape(section.empty)}</p>')
    else:
        parts += [_html_table(t) for t in section.tables]
        for chart, stem in zip(section.charts, section.figure_stems(), strict=True):
            data = base64.b64encode(figures[stem]["png"].read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(chart.title)}" '
                         f'src="data:image/png;base64,{data}"></figure>')
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in section.notes]
    return "\n".join([*parts, "</section>"])


def to_html(report: Report, figures: FigurePaths) -> str:
    """The report as one self-contained HTML page."""
    nav = "".join(f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>'
                  for s in report.sections)
    summary = "".join(f"<li>{_inline(line)}</li>" for line in report.summary)
    sections = "\n".join(_html_section(s, figures) for s in report.sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{html.escape(report.title)}</h1><ul>{summary}</ul>"
            f"<nav><ol>{nav}</ol></nav>\n{sections}\n</body></html>\n")


# -- CSV --------------------------------------------------------------------------------------

#: scalar test metrics, in column order (other scalars follow, sorted)
METRIC_ORDER = ("n", *(m for m, _ in CLASS_METRICS), "micro_f1",
                *(f"{d}_{k}" for d in AVD_NAMES for k in ("rmse", "mae", "pearson", "ccc")))
JOB_COLUMNS = ("job", "cell", "cell_label", "status", "fold", "seed", "text", "audio", "fusion",
               "approach", "text_type", "audio_type", "fusion_type", "approach_type",
               "text_mode", "modalities", "protocol", "error")
#: dev metrics in results.csv (what every "best" is chosen by)
DEV_COLUMNS = tuple(m for m, _ in CLASS_METRICS)
RUN_COLUMNS = ("best_epoch", "epochs_run", "dev_loss", "size_train", "size_dev", "size_test",
               "setup_s", "train_s", "eval_s", "total_s", "device", "mixed_precision", "stage",
               "text_source", "wer_test")


def _value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _job_row(cell: CellRecord, job: JobRecord) -> dict[str, Any]:
    names = cell.names or {}
    result = job.result or {}
    protocol = {**cell.protocol, **(result.get("protocol") or {})}
    row: dict[str, Any] = {
        "job": job.id, "cell": job.cell, "cell_label": job.label, "status": job.status,
        "fold": job.fold, "seed": job.seed,
        **{axis: names.get(axis) for axis in AXES},
        **{f"{axis}_type": cell.type_of(axis) for axis in AXES},
        "text_mode": result.get("text_mode") or (cell.configs.get("text") or {}).get("mode"),
        "modalities": "+".join(result.get("modalities") or cell.modalities),
        "protocol": protocol.get("type") or protocol.get("protocol"),
        "error": result.get("error") if job.status == FAILED else None,
    }
    timings = result.get("timings") or {}
    sizes = result.get("sizes") or {}
    row.update({
        "best_epoch": result.get("best_epoch"), "epochs_run": result.get("epochs_run"),
        "dev_loss": result.get("dev_loss"),
        **{f"size_{k}": sizes.get(k) for k in ("train", "dev", "test")},
        **{k: timings.get(k) for k in ("setup_s", "train_s", "eval_s", "total_s")},
        "device": result.get("device"), "mixed_precision": result.get("mixed_precision"),
        "stage": result.get("stage"),
        "text_source": (cell.configs.get("text") or {}).get("source", "gold")
        if cell.configs.get("text") else None,
        "wer_test": (((result.get("transcripts") or {}).get("wer") or {}).get("test")
                     or {}).get("wer"),
    })
    for key, value in job.test.items():
        if isinstance(value, (int, float)):
            row[f"test_{key}"] = value
    for key in DEV_COLUMNS:
        row[f"dev_{key}"] = job.metric(key, "dev")
    for label, scores in (job.test.get("per_class") or {}).items():
        for key, value in scores.items():
            row[f"test_{label}_{key}"] = value
    return row


def write_results_csv(run: RunData, path: Path) -> Path:
    """``results.csv``: one row per job (every status), flattened test metrics."""
    rows = [_job_row(cell, job) for cell in run.cells for job in cell.jobs]
    metric_keys: list[str] = []
    for row in rows:
        metric_keys += [k for k in row if k.startswith("test_") and k not in metric_keys]
    ordered = [f"test_{m}" for m in METRIC_ORDER if f"test_{m}" in metric_keys]
    columns = [*JOB_COLUMNS, *ordered, *[k for k in metric_keys if k not in ordered],
               *(f"dev_{m}" for m in DEV_COLUMNS), *RUN_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _value(row.get(c)) for c in columns})
    return path


def write_cells_csv(run: RunData, path: Path) -> Path:
    """``cells.csv``: one row per cell, ``<metric>_mean/_std/_n`` over its fold means (seeds
    averaged within each fold, n = folds), ``ua_boot_low``/``ua_boot_high`` (the 95% bootstrap
    interval of UA, see ``predictions``), ``<metric>_seed_sd`` (the within-fold spread over
    seeds) and ``dev_<metric>_mean`` for the classification metrics."""
    metrics = [m for m in METRIC_ORDER[1:]
               if any(j.metric(m) is not None for c in run.cells for j in c.done)]
    columns = ["cell", "cell_label", "text", "audio", "fusion", "approach", "control",
               "modalities", "planned", "done", "failed", "incomplete",
               *[f"{m}_{s}" for m in metrics for s in ("mean", "std", "n", "seed_sd")],
               "ua_boot_low", "ua_boot_high", *[f"dev_{m}_mean" for m in DEV_COLUMNS]]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for cell in run.cells:
            names = cell.names or {}
            row: dict[str, Any] = {
                "cell": cell.id, "cell_label": cell.label,
                **{axis: names.get(axis) for axis in AXES},
                "control": cell.control,
                "modalities": "+".join(cell.modalities), "planned": cell.planned,
                "done": len(cell.done), "failed": sum(j.status == FAILED for j in cell.jobs),
                "incomplete": cell.incomplete}
            for m in metrics:
                s = fold_summary(cell.values(m))
                if s.n:
                    row.update({f"{m}_mean": s.mean, f"{m}_std": s.std,
                                f"{m}_seed_sd": seed_spread(cell.values(m))})
                row[f"{m}_n"] = s.n
            interval = bootstrap_ua(run, cell) if cell.done else None
            if interval is not None:
                row.update(ua_boot_low=interval.low, ua_boot_high=interval.high)
            for m in DEV_COLUMNS:
                dev = fold_summary(cell.values(m, "dev"))
                row[f"dev_{m}_mean"] = dev.mean if dev.n else None
            writer.writerow({c: _value(row.get(c)) for c in columns})
    return path
