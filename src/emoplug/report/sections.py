"""The report's sections, built from a run's records: the results table, the seed study's
comparisons (each a table and a chart), ablations, confusion matrices, compute, and the list
of missing and failed jobs.

"Best" always means the highest mean UA (``RANK_METRIC``). Cells that are ablations (an
ablation switch set, see ``ABLATION_SWITCHES``) appear only in the ablation table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from emoplug.report.collect import DONE, FAILED, NOT_STARTED, STARTED, CellRecord, RunData
from emoplug.report.figures import BarChart, ConfusionGrid, ForestPlot
from emoplug.report.stats import MIN_WILCOXON, PairedTest, Summary, paired_test, summarize
from emoplug.report.tables import (
    CLASS_METRICS,
    DASH,
    DIM_METRICS,
    Report,
    Section,
    Table,
    fmt_diff,
    fmt_p,
    fmt_seconds,
    fmt_summary,
    metric_title,
)
from emoplug.types import AVD_NAMES

RANK_METRIC = "ua"
#: metrics of the paired comparisons
PAIRED_METRICS = ("ua", "wa")
#: (component axis, config key) -> the value that ablates; the full model has the other value
ABLATION_SWITCHES: dict[tuple[str, str], Any] = {
    ("fusion", "attention"): False,
    ("fusion", "layer_norm"): False,
    ("approach", "oracle"): True,
}
MODALITY_GROUPS = ((("text",), "Text only"), (("audio",), "Audio only"),
                   (("text", "audio"), "Text + audio"))
TOP_CONFUSIONS = 3
PAIRED_COLUMNS = ["Metric", "n", "Mean A", "Mean B", "A − B [95% CI]", "t-test p",
                  "Wilcoxon p"]
INCOMPLETE_MARK = "†"


def build_report(run: RunData) -> Report:
    """Every section of the report of ``run``."""
    sections = [results_section(run), missing_section(run), stage1_section(run),
                approach_section(run), modality_section(run),
                grouped_section(run, "text", "text_encoders", "Transformer comparison",
                                "Cells with text (text only and multimodal), grouped by text "
                                "encoder."),
                grouped_section(run, "audio", "audio_features", "Audio feature comparison",
                                "Cells with audio (audio only and multimodal), grouped by "
                                "audio feature."),
                grouped_section(run, "fusion", "fusion", "Fusion comparison",
                                "Multimodal cells, grouped by fusion strategy."),
                ablation_section(run), confusion_section(run), compute_section(run)]
    return Report(f"emoplug report: {run.name}", summary_lines(run), sections)


# -- helpers ----------------------------------------------------------------------------------

def cell_summary(cell: CellRecord, metric: str) -> Summary:
    return summarize([j.metric(metric) for j in cell.done])


def has_metric(cell: CellRecord, metric: str) -> bool:
    return any(j.metric(metric) is not None for j in cell.done)


def is_ablation(cell: CellRecord) -> bool:
    """The cell sets an ablation switch (attention off, layer norm off, oracle on)."""
    return any((cell.configs.get(axis) or {}).get(key) == value
               for (axis, key), value in ABLATION_SWITCHES.items())


def comparable(run: RunData) -> list[CellRecord]:
    """Cells with finished jobs and known components, ablations left out."""
    return [c for c in run.cells if c.done and c.names is not None and not is_ablation(c)]


def best(cells: Iterable[CellRecord]) -> CellRecord | None:
    scored = [(cell_summary(c, RANK_METRIC).mean, i, c) for i, c in enumerate(cells)]
    scored = [s for s in scored if not math.isnan(s[0])]
    return max(scored, key=lambda s: (s[0], -s[1]))[2] if scored else None


def jobs_cell(cell: CellRecord) -> str:
    """``done/planned``, marked when fewer jobs finished than were planned."""
    text = f"{len(cell.done)}/{cell.planned}" if cell.planned else str(len(cell.done))
    return f"{text} {INCOMPLETE_MARK}" if cell.incomplete else text


def protocol_text(protocol: dict[str, Any], full: bool = False) -> str:
    """``loso, speaker-independent`` (short) or with every setting (``full``)."""
    if not protocol:
        return DASH
    kind = str(protocol.get("type") or protocol.get("protocol") or DASH)
    if full:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(protocol.items())
                             if k not in ("type", "protocol", "speaker_dependent", "dev_speaker"))
        kind = f"{kind} ({settings})" if settings else kind
    if "speaker_dependent" in protocol:
        kind += ", speaker-dependent" if protocol["speaker_dependent"] else \
            ", speaker-independent"
    return kind


def paired(a: CellRecord, b: CellRecord, metric: str) -> PairedTest:
    """``a - b`` over the (fold, seed) pairs both cells finished."""
    ja, jb = a.by_pair(), b.by_pair()
    keys = sorted(set(ja) & set(jb))
    values = [(ja[k].metric(metric), jb[k].metric(metric)) for k in keys]
    return paired_test([math.nan if x is None else x for x, _ in values],
                       [math.nan if y is None else y for _, y in values])


def paired_cells(test: PairedTest, metric: str) -> list[str]:
    """The PAIRED_COLUMNS of one test."""
    mean_a, mean_b = (Summary(m, math.nan, test.n) for m in (test.mean_a, test.mean_b))
    return [metric_title(metric), str(test.n), fmt_summary(mean_a, metric),
            fmt_summary(mean_b, metric), fmt_diff(test, metric), fmt_p(test.t_p),
            fmt_p(test.wilcoxon_p)]


def metric_columns(metrics: Iterable[str]) -> list[str]:
    return [metric_title(m) for m in metrics]


def dims_present(cells: Iterable[CellRecord]) -> list[str]:
    cells = list(cells)
    return [d for d in AVD_NAMES if any(has_metric(c, f"{d}_rmse") for c in cells)]


# -- summary ----------------------------------------------------------------------------------

def summary_lines(run: RunData) -> list[str]:
    planned = sum(c.planned for c in run.cells)
    done, failed = run.count(DONE), run.count(FAILED)
    waiting = run.count(STARTED) + run.count(NOT_STARTED)
    plan = run.plan or {}
    described = [c for c in run.cells if c.done and c.protocol] or run.cells
    protocols = {protocol_text(c.protocol, full=True) for c in described if c.protocol}
    lines = [
        f"Run folder: `{run.path}`" + (f"; recipe: `{plan['source']}`" if plan.get("source")
                                       else ""),
        f"Jobs: {planned} planned, {done} done, {failed} failed, {run.count(STARTED)} started "
        f"without a result, {run.count(NOT_STARTED)} not started.",
        f"Cells: {len(run.cells)} ({sum(c.incomplete for c in run.cells)} with fewer finished "
        f"jobs than planned, marked {INCOMPLETE_MARK}).",
    ]
    if plan.get("folds"):
        lines.append(f"Folds: {', '.join(map(str, plan['folds']))}; seeds: "
                     f"{', '.join(map(str, plan.get('recipe', {}).get('seeds', [])))}.")
    if protocols:
        lines.append(f"Protocol: {'; '.join(sorted(protocols))}.")
    if waiting or failed:
        lines.append(f"This run is incomplete: every table covers the {done} finished jobs; "
                     "the jobs without a result are listed under 'Missing and failed jobs'.")
    if run.unplanned:
        lines.append(f"{run.unplanned} job folders that are not in plan.json (an earlier plan) "
                     "are left out.")
    lines.append("Statistics: each value is the mean ± sample standard deviation (ddof=1) over "
                 "a cell's finished jobs (folds × seeds); WA, UA and F1 in %, their differences "
                 "in percentage points; RMSE, MAE and CCC on the corpus scale. Paired "
                 "comparisons match jobs on (fold, seed): mean difference with its 95% "
                 "confidence interval (t-distribution), paired t-test, and Wilcoxon signed-rank "
                 f"test when n ≥ {MIN_WILCOXON}. 'Best' means the highest mean "
                 f"{metric_title(RANK_METRIC)}.")
    return lines


# -- results ----------------------------------------------------------------------------------

def results_section(run: RunData) -> Section:
    section = Section("results", "Results per cell",
                      "Test-set scores of every cell: mean ± std over its finished jobs.")
    metrics = [m for m, _ in CLASS_METRICS]
    rows = [[c.label, jobs_cell(c), protocol_text(c.protocol),
             *[fmt_summary(cell_summary(c, m), m) for m in metrics]] for c in run.cells]
    section.tables.append(Table(["Cell", "Jobs", "Protocol", *metric_columns(metrics)], rows,
                                "Categorical emotion recognition"))
    dims = dims_present(run.cells)
    if dims:
        dim_metrics = [f"{d}_{k}" for d in dims for k, _ in DIM_METRICS]
        rows = [[c.label, jobs_cell(c), *[fmt_summary(cell_summary(c, m), m)
                                          for m in dim_metrics]]
                for c in run.cells if any(has_metric(c, f"{d}_rmse") for d in dims)]
        section.tables.append(Table(["Cell", "Jobs", *metric_columns(dim_metrics)], rows,
                                    "Dimensional prediction (valence, arousal, dominance; "
                                    "protocol as above)"))
    else:
        section.notes.append("No cell predicts valence/arousal/dominance (no dimensional table).")
    if any(c.incomplete for c in run.cells):
        section.notes.append(f"{INCOMPLETE_MARK} fewer finished jobs than planned.")
    return section


def missing_section(run: RunData) -> Section:
    section = Section("missing", "Missing and failed jobs",
                      "Jobs without a finished result; they are not part of any mean.")
    rows: list[list[str]] = []
    order = {FAILED: 0, STARTED: 1}
    unfinished = sorted((j for j in run.jobs if j.status in order),
                        key=lambda j: (order[j.status], j.label, j.fold, j.seed))
    for job in unfinished:
        error = (job.result or {}).get("error", "") if job.status == FAILED else \
            "no result.json yet (running or interrupted)"
        rows.append([job.status, job.label, job.fold, str(job.seed), job.id, error])
    for cell in run.cells:
        waiting = [j for j in cell.jobs if j.status == NOT_STARTED]
        if waiting:
            pairs = ", ".join(f"{j.fold}/{j.seed}" for j in waiting)
            count = f"{len(waiting)} job" + ("s" if len(waiting) > 1 else "")
            rows.append([NOT_STARTED, cell.label, f"{count} (fold/seed): {pairs}",
                         "", "", "no job folder yet"])
    for stage in run.stages:
        if stage.get("status") != DONE:
            kind = (stage.get("text") or {}).get("type")
            rows.append(["stage failed", f"text stage ({kind})" if kind else "text stage",
                         str(stage.get("fold", "")), str(stage.get("seed", "")),
                         str(stage.get("stage", "")), str(stage.get("error", ""))])
    if not rows:
        section.empty = "Every planned job finished."
        return section
    section.tables.append(Table(["Status", "Cell", "Fold", "Seed", "Job", "Error"], rows))
    return section


# -- the seed study's comparisons -------------------------------------------------------------

def stage1_section(run: RunData) -> Section:
    section = Section("stage1", "Stage-1 dimensional error",
                      "RMSE per dimension of the cells that predict valence, arousal and "
                      "dominance (two_stage, joint), by modality. The chart shows each "
                      "modality's cell with the lowest mean RMSE.")
    cells = [c for c in comparable(run) if any(has_metric(c, f"{d}_rmse") for d in AVD_NAMES)]
    if not cells:
        section.empty = "No cell predicts valence/arousal/dominance (no two_stage or joint cell)."
        return section
    dims = dims_present(cells)

    def mean_rmse(cell: CellRecord) -> float:
        values = [cell_summary(cell, f"{d}_rmse").mean for d in dims]
        return float(np.nanmean(values)) if any(not math.isnan(v) for v in values) else math.inf

    rows, series = [], {}
    for modalities, title in MODALITY_GROUPS:
        group = sorted((c for c in cells if c.modalities == modalities), key=mean_rmse)
        for cell in group:
            rows.append([title, cell.label, jobs_cell(cell),
                         *[fmt_summary(cell_summary(cell, f"{d}_rmse"), "rmse") for d in dims]])
        if group:
            series[f"{title}: {group[0].label}"] = [
                cell_summary(group[0], f"{d}_rmse") for d in dims]
    section.tables.append(Table(["Modality", "Cell", "Jobs",
                                 *[f"{d} RMSE" for d in dims]], rows))
    section.charts.append(BarChart("Stage-1 RMSE per dimension (best cell per modality)",
                                   list(dims), series, "RMSE (mean ± std)"))
    return section


def approach_pairs(run: RunData) -> list[tuple[CellRecord, CellRecord]]:
    """(direct cell, other-approach cell) with the same text, audio and fusion names."""
    cells = comparable(run)

    def is_direct(cell: CellRecord) -> bool:
        return (cell.type_of("approach") or cell.names["approach"]) == "direct"

    return [(direct, other) for direct in cells if is_direct(direct)
            for other in cells if not is_direct(other)
            and all(other.names[a] == direct.names[a] for a in ("text", "audio", "fusion"))]


def approach_section(run: RunData) -> Section:
    section = Section("approach", "Direct vs two-stage",
                      "Cells that differ only in the approach (same text, audio and fusion): "
                      "A = direct classification, B = the other approach (two_stage, joint). "
                      "A − B > 0 means direct is better.")
    pairs = approach_pairs(run)
    if not pairs:
        section.empty = "No pair of cells differing only in the approach (direct vs another)."
        return section
    comparisons = []
    for a, b in pairs:
        inputs = "+".join(n for n in (a.names["text"], a.names["audio"]) if n)
        name = f"{inputs}/{a.names['fusion']}: {a.names['approach']} vs {b.names['approach']}"
        comparisons.append((name, a, b))
    _paired_table(section, comparisons, "Comparison")
    return section


def _paired_table(section: Section, comparisons: list[tuple[str, CellRecord, CellRecord]],
                  first: str) -> None:
    """A table of paired tests over PAIRED_METRICS and a forest plot of the first metric."""
    rows, labels, tests = [], [], []
    for name, a, b in comparisons:
        for metric in PAIRED_METRICS:
            test = paired(a, b, metric)
            rows.append([name, *paired_cells(test, metric)])
            if metric == PAIRED_METRICS[0]:
                labels.append(name)
                tests.append(test)
    section.tables.append(Table([first, *PAIRED_COLUMNS], rows))
    if any(t.n for t in tests):
        scaled = [PairedTest(t.n, *(100 * v for v in (t.mean_a, t.mean_b, t.mean_diff, t.std_diff,
                                                      t.ci_low, t.ci_high)), t.t_p, t.wilcoxon_p)
                  for t in tests]
        metric = metric_title(PAIRED_METRICS[0])
        section.charts.append(ForestPlot(f"{section.title}: paired difference in {metric}",
                                         labels, scaled,
                                         f"A − B, {metric} (percentage points, 95% CI)"))


def modality_section(run: RunData) -> Section:
    section = Section("modality", "Modality importance",
                      "The best text-only, audio-only and multimodal cells, and paired tests "
                      "of the best multimodal cell against the best single-modality ones.")
    cells = comparable(run)
    metrics = [m for m, _ in CLASS_METRICS]
    rows, series, chosen = [], {}, {}
    for modalities, title in MODALITY_GROUPS:
        cell = best(c for c in cells if c.modalities == modalities)
        if cell is None:
            section.notes.append(f"No {title.lower()} cell with results in this run.")
            continue
        chosen[modalities] = cell
        rows.append([title, cell.label, jobs_cell(cell),
                     *[fmt_summary(cell_summary(cell, m), m) for m in metrics]])
        series[f"{title}: {cell.label}"] = [
            Summary(*(100 * v for v in (s.mean, s.std)), s.n)
            for s in (cell_summary(cell, m) for m in metrics)]
    if not rows:
        section.empty = "No cell with results."
        return section
    section.tables.append(Table(["Modalities", "Best cell", "Jobs", *metric_columns(metrics)],
                                rows))
    section.charts.append(BarChart("Modality importance (best cell per modality)",
                                   metric_columns(metrics), series, "score (%)"))
    multi = chosen.get(("text", "audio"))
    comparisons = [(f"{multi.label} vs {single.label}", multi, single)
                   for key in (("text",), ("audio",)) if multi and (single := chosen.get(key))]
    if comparisons:
        _paired_table(section, comparisons, "A vs B")
    return section


def grouped_section(run: RunData, axis: str, key: str, title: str, text: str) -> Section:
    """Cells pooled by the component on ``axis`` (text encoder, audio feature, fusion)."""
    section = Section(key, title, text + " Each row pools all finished jobs of the group's "
                      "cells (every other component and approach), so its std includes the "
                      "spread between cells.")
    cells = [c for c in comparable(run) if c.names.get(axis) is not None]
    if axis == "fusion":
        cells = [c for c in cells if len(c.modalities) == 2]
    groups: dict[str, list[CellRecord]] = {}
    for cell in cells:
        groups.setdefault(cell.names[axis], []).append(cell)
    if not groups:
        what = {"text": "text", "audio": "audio", "fusion": "multimodal"}[axis]
        section.empty = f"No {what} cell with results in this run."
        return section
    metrics = [m for m, _ in CLASS_METRICS[:3]]
    dims = [f"{d}_rmse" for d in dims_present(cells)]
    rows, series = [], {metric_title(m): [] for m in metrics}
    for name, group in groups.items():
        jobs = [j for c in group for j in c.done]
        kinds = {c.type_of(axis) for c in group} - {None, name}
        label = f"{name} ({', '.join(sorted(kinds))})" if kinds else name
        winner = best(group)
        summaries = {m: summarize([j.metric(m) for j in jobs]) for m in [*metrics, *dims]}
        rows.append([label, str(len(group)), str(len(jobs)),
                     *[fmt_summary(summaries[m], m) for m in [*metrics, *dims]],
                     winner.label if winner else DASH])
        for m in metrics:
            s = summaries[m]
            series[metric_title(m)].append(Summary(100 * s.mean, 100 * s.std, s.n))
    section.tables.append(Table([axis.capitalize(), "Cells", "Jobs", *metric_columns(metrics),
                                 *metric_columns(dims), "Best cell"], rows))
    section.charts.append(BarChart(title, list(groups), series, "score (%)"))
    return section


def ablation_of(cell: CellRecord, full: CellRecord) -> list[str] | None:
    """The switches that turn ``full`` into ``cell`` (its only differences), else ``None``."""
    if cell is full or cell.names is None or full.names is None or is_ablation(full):
        return None
    if any(cell.names.get(a) != full.names.get(a) for a in ("text", "audio")):
        return None
    switched = []
    for axis in ("fusion", "approach"):
        mine, theirs = cell.configs.get(axis), full.configs.get(axis)
        if mine is None or theirs is None:
            return None
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) == theirs.get(key):
                continue
            if (axis, key) in ABLATION_SWITCHES and \
                    mine.get(key) == ABLATION_SWITCHES[(axis, key)]:
                switched.append(f"{axis}.{key}={str(mine.get(key)).lower()}")
            else:
                return None
    return switched or None


def ablation_section(run: RunData) -> Section:
    section = Section("ablation", "Ablations",
                      "Each ablated cell against its full model (the cell whose fusion and "
                      "approach configs differ only in the switch): A = ablated, B = full. "
                      "Switches: " + ", ".join(f"{axis}.{key}={str(v).lower()}"
                                                for (axis, key), v in ABLATION_SWITCHES.items())
                      + ".")
    cells = [c for c in run.cells if c.done and c.names is not None]
    comparisons = []
    for cell in cells:
        for full in cells:
            switched = ablation_of(cell, full)
            if switched:
                comparisons.append((f"{full.label}: {', '.join(switched)}", cell, full))
    if not comparisons:
        section.empty = "No ablation cell (attention false, layer_norm false, two_stage oracle " \
                        "true) with a full-model sibling in this run."
        return section
    _paired_table(section, comparisons, "Full model: ablation")
    return section


def confusion_section(run: RunData) -> Section:
    section = Section("confusion", "Error analysis: confusion matrices",
                      f"The {TOP_CONFUSIONS} best cells' test confusion matrices, summed over "
                      "their finished jobs and normalised per gold row (% of the gold class).")
    ranked = sorted((c for c in comparable(run) if has_metric(c, RANK_METRIC)),
                    key=lambda c: -cell_summary(c, RANK_METRIC).mean)
    panels, labels = [], None
    for cell in ranked:
        total, cell_labels = _summed_confusion(cell)
        if total is None or (labels is not None and cell_labels != labels):
            continue
        labels = cell_labels
        sums = total.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            normalised = np.where(sums > 0, total / np.maximum(sums, 1), np.nan)
        panels.append((cell.label, normalised))
        rows = [[gold, *(DASH if math.isnan(v) else f"{100 * v:.1f}" for v in row),
                 str(int(sums[i, 0]))] for i, (gold, row) in enumerate(zip(labels, normalised,
                                                                            strict=True))]
        section.tables.append(Table(["gold \\ predicted", *labels, "utterances"], rows,
                                    f"{cell.label} ({len(cell.done)} jobs)"))
        if len(panels) == TOP_CONFUSIONS:
            break
    if not panels:
        section.empty = "No finished job recorded a confusion matrix."
        return section
    section.charts.append(ConfusionGrid(
        "Confusion matrices of the best cells (row-normalised, %)", labels, panels))
    return section


def _summed_confusion(cell: CellRecord) -> tuple[np.ndarray | None, list[str] | None]:
    total, labels = None, None
    for job in cell.done:
        matrix, job_labels = job.test.get("confusion"), job.result.get("labels")
        if not matrix or not job_labels:
            continue
        if labels is not None and job_labels != labels:
            continue
        labels = list(job_labels)
        arr = np.asarray(matrix, dtype=float)
        total = arr if total is None else total + arr
    return total, labels


def compute_section(run: RunData) -> Section:
    section = Section("compute", "Compute",
                      "Wall time per job and per phase. Encoder phase: staged text-encoder "
                      "fine-tuning, once per (encoder, fold, seed), shared by every cell of "
                      "that fold and seed (stages/*/stage.json). Head phase: each job's setup, "
                      "training and evaluation (result.json timings), mean ± std per job.")
    timed = [c for c in run.cells if c.done]
    phases = ("setup_s", "train_s", "eval_s", "total_s")
    rows = []
    for cell in timed:
        devices = sorted({str(j.result.get("device", DASH)) for j in cell.done})
        spent = sum(_timing(j.result, "total_s") for j in cell.jobs if j.result)
        rows.append([cell.label, str(len(cell.done)), ", ".join(devices),
                     *[_seconds_summary([_timing(j.result, p) for j in cell.done])
                       for p in phases], fmt_seconds(spent)])
    if rows:
        section.tables.append(Table(["Cell", "Jobs", "Device", "Setup", "Train", "Eval",
                                     "Total per job", "Sum (incl. failed)"], rows,
                                    "Head phase"))
    stages: dict[str, list[dict[str, Any]]] = {}
    for stage in run.stages:
        if stage.get("status") == DONE:
            stages.setdefault(_stage_name(run, stage.get("text") or {}), []).append(stage)
    stage_rows = [[name, str(len(group)),
                   _count_summary([s.get("epochs_run") for s in group]),
                   _seconds_summary([s.get("train_s") for s in group]),
                   _seconds_summary([s.get("total_s") for s in group]),
                   fmt_seconds(sum(float(s.get("total_s") or 0) for s in group))]
                  for name, group in stages.items()]
    if stage_rows:
        section.tables.append(Table(["Text encoder", "Stages", "Epochs", "Train", "Total per "
                                     "stage", "Sum"], stage_rows, "Encoder phase"))
    else:
        section.notes.append("No staged text fine-tuning in this run (no encoder phase).")
    if not rows and not stage_rows:
        section.empty = "No finished job or stage to time."
        return section
    head = sum(_timing(j.result, "total_s") for j in run.jobs if j.result)
    encoder = sum(float(s.get("total_s") or 0) for g in stages.values() for s in g)
    section.notes.append(f"Total: encoder phase {fmt_seconds(encoder)}, head phase "
                         f"{fmt_seconds(head)} (sums of wall times; parallel processes "
                         "overlap).")
    return section


def _timing(result: dict[str, Any], key: str) -> float:
    value = (result.get("timings") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _seconds_summary(values: Iterable[Any]) -> str:
    s = summarize([v for v in values if isinstance(v, (int, float))])
    if s.n == 0:
        return DASH
    return fmt_seconds(s.mean) + ("" if math.isnan(s.std) else f" ± {fmt_seconds(s.std)}")


def _count_summary(values: Iterable[Any]) -> str:
    s = summarize([v for v in values if isinstance(v, (int, float))])
    if s.n == 0:
        return DASH
    return f"{s.mean:.1f}" + ("" if math.isnan(s.std) else f" ± {s.std:.1f}")


def _stage_name(run: RunData, text: dict[str, Any]) -> str:
    """The recipe name of a stage's text encoder config (its type when no cell matches)."""
    for cell in run.cells:
        if cell.configs.get("text") == text and cell.names:
            return str(cell.names.get("text"))
    return str(text.get("type", "?"))

