"""``emoplug report``: the tables and figures of a run folder, as Markdown, HTML and CSV.

``write_report(run_dir)`` reads ``plan.json`` and every ``jobs/*/{config,result}.json``
(see ``collect``), aggregates them (``stats``, ``sections``), draws the figures headless
(``figures``) and writes the chosen formats (``render``). A run still in progress reports
what has finished. Importing this package is cheap: the work happens inside ``write_report``.

Its sections are registered through ``emoplug_register_report_sections`` (the bundled ones in
``builtin.py``). A plugin's section builder receives a :class:`RunData` and returns a
:class:`Section` of :class:`Table` objects; these three are importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from emoplug.errors import EmoplugError

FORMATS = ("md", "html", "csv", "latex")
DEFAULT_FORMATS = ("md", "html", "csv")
#: the paired t-tests (``emoplug.report.stats.STATS``, kept here so importing stays cheap)
STATS = ("corrected", "plain")


def write_report(run_dir: Path, output_dir: Path | None = None,
                 formats: Sequence[str] = DEFAULT_FORMATS, stats: str = "corrected"
                 ) -> dict[str, Path]:
    """Write the report of ``run_dir`` into ``output_dir`` (default ``run_dir/report``).

    ``formats`` is a subset of ``md`` (``report.md`` + ``figures/``), ``html`` (one
    self-contained ``report.html``), ``csv`` (``results.csv``, one row per job, and
    ``cells.csv``, one row per cell) and ``latex`` (``latex/<section>.tex`` tables and the
    standalone ``latex/report_tables.tex``). Returns ``{"md" | "html" | "csv" | "cells_csv" |
    "latex" | "figures": path}`` for what was written. ``stats`` picks the paired t-test of every
    comparison: ``corrected`` (Nadeau–Bengio's corrected resampled t-test, the default) or
    ``plain`` (uncorrected). Raises ``EmoplugError`` for a folder that is not a run or an
    unknown format or test.
    """
    from emoplug.report import render
    from emoplug.report.collect import load_run
    from emoplug.report.figures import save_chart
    from emoplug.report.sections import build_report

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise EmoplugError(f"report format {', '.join(unknown) or '(none)'}: choose from "
                           f"{', '.join(FORMATS)}")
    if stats not in STATS:
        raise EmoplugError(f"report stats '{stats}': choose from {', '.join(STATS)}")
    run = load_run(Path(run_dir))
    run.stats = stats
    output = Path(output_dir) if output_dir is not None else run.path / "report"
    output.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if "latex" in formats:
        from emoplug.report.latex import write_latex

        report = build_report(run)
        written["latex"] = write_latex(report, output / "latex")
    if "md" in formats or "html" in formats:
        report = report if "latex" in formats else build_report(run)
        figures: render.FigurePaths = {}
        for section in report.sections:
            if section.empty:
                continue
            for chart, stem in zip(section.charts, section.figure_stems(), strict=True):
                figures[stem] = save_chart(chart, output / "figures", stem)
        if figures:
            written["figures"] = output / "figures"
        if "md" in formats:
            written["md"] = output / "report.md"
            written["md"].write_text(render.to_markdown(report, figures, output),
                                     encoding="utf-8")
        if "html" in formats:
            written["html"] = output / "report.html"
            written["html"].write_text(render.to_html(report, figures), encoding="utf-8")
    if "csv" in formats:
        written["csv"] = render.write_results_csv(run, output / "results.csv")
        written["cells_csv"] = render.write_cells_csv(run, output / "cells.csv")
    return written


#: the types a report section plugin uses, imported on first access (they import numpy)
_LAZY = {"RunData": "emoplug.report.collect", "CellRecord": "emoplug.report.collect",
         "Section": "emoplug.report.tables", "Table": "emoplug.report.tables"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emoplug.report' has no attribute {name!r}")


__all__ = ["DEFAULT_FORMATS", "FORMATS", "CellRecord", "RunData", "Section", "Table",
           "write_report"]
