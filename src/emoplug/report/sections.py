"""The report's sections, built from a run's records: the summary, the results table with
its chance floors, missing jobs, stage-1 error, confusion matrices and compute; the paired
comparisons live in ``comparisons.py``, the choice of cells in ``select.py``.

Every "best" is chosen on dev UA and reported on test; every statistic is over folds (seeds
averaged within each fold first, see ``stats.py``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from emoplug.registry import Registry, get_registry
from emoplug.report.collect import DONE, FAILED, NOT_STARTED, STARTED, CellRecord, RunData
from emoplug.report.figures import BarChart, ConfusionGrid
from emoplug.report.predictions import BOOTSTRAP_RESAMPLES, bootstrap_ua
from emoplug.report.select import (
    CHOSEN,
    INCOMPLETE_MARK,
    FoldFloor,
    cell_summary,
    comparable,
    dims_present,
    floor_cells,
    fold_floors,
    has_metric,
    jobs_cell,
    protocol_names,
    rank,
)
from emoplug.report.stats import MIN_WILCOXON, PLAIN, fold_means, seed_spread, summarize
from emoplug.report.tables import (
    CLASS_METRICS,
    DASH,
    DIM_METRICS,
    Report,
    Section,
    Table,
    fmt_seconds,
    fmt_summary,
    fmt_value,
    metric_title,
)
from emoplug.types import AVD_NAMES

TOP_CONFUSIONS = 3


def build_report(run: RunData, registry: Registry | None = None) -> Report:
    """The report of ``run``: the summary, then every registered section in order
    (``emoplug_register_report_sections``; the bundled ones are in ``builtin.py``). A
    section whose builder raises is shown with the error, and the others are unaffected."""
    built = []
    for spec in (registry or get_registry()).report_sections():
        try:
            built.append(spec.build(run))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"emoplug: warning: report section '{spec.key}' of plugin '{spec.plugin}' "
                  f"failed: {reason}", file=sys.stderr)
            built.append(Section(spec.key, spec.key, "", empty=f"This section failed to "
                                 f"build (plugin '{spec.plugin}'): {reason}"))
    return Report(f"emoplug report: {run.name}", summary_lines(run), built)


def protocol_text(protocol: dict[str, Any], full: bool = False) -> str:
    """``loso, speaker-independent`` (short) or with every setting (``full``)."""
    if not protocol:
        return DASH
    kind = str(protocol.get("type") or protocol.get("protocol") or DASH)
    if not full and protocol.get("subset", "all") != "all":
        kind += f" ({protocol['subset']})"
    if full:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(protocol.items())
                             if k not in ("type", "protocol", "speaker_dependent", "dev_speaker"))
        kind = f"{kind} ({settings})" if settings else kind
    if "speaker_dependent" in protocol:
        kind += ", speaker-dependent" if protocol["speaker_dependent"] else \
            ", speaker-independent"
    return kind


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
    lines.append("Selection: every 'best' cell is chosen on dev UA (mean over the folds every "
                 "candidate finished; ties broken by label) and reported on test.")
    lines.append("Statistics: the independent unit is the fold. A cell's seeds are averaged "
                 "within each fold; each value is the mean ± sample standard deviation "
                 "(ddof=1) over those fold means, n = folds; 'Seed SD' is the within-fold "
                 "spread over seeds, shown on its own. WA, UA and F1 in %, their differences in "
                 "percentage points; RMSE, MAE and CCC on the corpus scale. Paired comparisons "
                 "match cells on folds: mean difference with its 95% confidence interval "
                 f"(t-distribution, n − 1 degrees of freedom), {_test_name(run)} with Holm's "
                 "correction over the comparisons of one table and metric, and the Wilcoxon "
                 f"signed-rank test only with at least {MIN_WILCOXON} folds. Micro-F1 is not "
                 "shown: for single-label classification it equals WA.")
    return lines


def _test_name(run: RunData) -> str:
    if run.stats == PLAIN:
        return ("the plain paired t-test (uncorrected, as `--stats plain` asked: "
                "anti-conservative under cross-validation)")
    return ("the Nadeau–Bengio corrected resampled t-test (variance × (1/n + n_test/n_train): "
            "cross-validation training sets overlap, so fold differences are correlated)")


# -- results ----------------------------------------------------------------------------------

def results_section(run: RunData) -> Section:
    section = Section("results", "Results per cell",
                      "Test-set scores of every cell: mean ± std over folds (n = folds; a "
                      "fold's seeds averaged first), the within-fold seed SD of UA, a 95% "
                      f"bootstrap interval of UA ({BOOTSTRAP_RESAMPLES} resamples of the test "
                      "utterances within each fold, seeded), and the dev UA that every choice "
                      "of a best cell uses. The last row is the protocol's majority-class floor.")
    metrics = [m for m, _ in CLASS_METRICS]
    rows = [[c.label, jobs_cell(c), str(cell_summary(c, "ua").n), protocol_text(c.protocol),
             *[fmt_summary(cell_summary(c, m), m) for m in metrics],
             fmt_value(seed_spread(c.values("ua")), "ua"), _bootstrap_cell(run, c),
             fmt_summary(cell_summary(c, "ua", "dev"), "ua")] for c in run.cells]
    names = protocol_names(run)
    floors = {name: fold_floors(run, name) for name in names}
    cells = len(rows)
    for name, under in floors.items():
        if under:
            title = "Majority-class floor" + (f" ({name or 'recipe protocol'})"
                                              if len(names) > 1 else "")
            rows.append([title, DASH, str(len(under)), DASH, *floor_cells(under, metrics),
                         DASH, DASH, DASH])
    section.tables.append(Table(
        ["Cell", "Jobs", "n (folds)", "Protocol", *[metric_title(m) for m in metrics],
         "Seed SD (UA)", "UA 95% bootstrap CI", "Dev UA"], rows,
        "Categorical emotion recognition",
        note=("n = folds; mean ± sample std over the fold means (a fold's seeds averaged "
              "first); bootstrap CI: percentile interval over "
              f"{BOOTSTRAP_RESAMPLES} resamples of the test utterances within each fold."),
        best={metric_title(m): "max" for m in metrics}, summary_rows=len(rows) - cells))
    every = [f for under in floors.values() for f in under]
    if every:
        section.tables.append(_floor_table(every))
    else:
        section.notes.append("No job recorded its label counts: the majority-class floor "
                             "cannot be shown (results written before label_counts existed).")
    dims = dims_present(run.cells)
    if dims:
        dim_metrics = [f"{d}_{k}" for d in dims for k, _ in DIM_METRICS]
        rows = [[c.label, jobs_cell(c), str(cell_summary(c, f"{dims[0]}_rmse").n),
                 *[fmt_summary(cell_summary(c, m), m) for m in dim_metrics]]
                for c in run.cells if any(has_metric(c, f"{d}_rmse") for d in dims)]
        section.tables.append(Table(["Cell", "Jobs", "n (folds)",
                                     *[metric_title(m) for m in dim_metrics]], rows,
                                    "Dimensional prediction (valence, arousal, dominance, on "
                                    f"the corpus scale {avd_scale_text(run)}; protocol as "
                                    "above)",
                                    note="n = folds; mean ± sample std over the fold means.",
                                    best={metric_title(m): "max" if m.endswith("_ccc")
                                          else "min" for m in dim_metrics}))
    else:
        section.notes.append("No cell predicts valence/arousal/dominance (no dimensional table).")
    if any(c.incomplete for c in run.cells):
        section.notes.append(f"{INCOMPLETE_MARK} fewer finished jobs than planned.")
    return section


def _bootstrap_cell(run: RunData, cell: CellRecord) -> str:
    """``[68.1, 72.3]``: the cell's 95% bootstrap interval of test UA; a dash without
    per-utterance predictions."""
    interval = bootstrap_ua(run, cell) if cell.done else None
    if interval is None:
        return DASH
    return f"[{fmt_value(interval.low, 'ua')}, {fmt_value(interval.high, 'ua')}]"


def _floor_table(floors: list[FoldFloor]) -> Table:
    rows = [[f.fold, f.majority, str(f.test_size),
             *[fmt_value(f.scores[m], m) for m, _ in CLASS_METRICS]] for f in floors]
    caption = ("Majority-class floor per fold: always predicting the training fold's most "
               "frequent class")
    if any(f.test_sets > 1 for f in floors):
        caption += (" (cells of a fold with different test sets, because utterances lacking "
                    "a modality were dropped: the most common test set is shown)")
    return Table(["Fold", "Training majority", "Test utterances",
                  *[metric_title(m) for m, _ in CLASS_METRICS]], rows, caption)


def avd_scale_text(run: RunData) -> str:
    """``1–5``: the AVD scale the jobs recorded, or ``(unknown)``."""
    for job in run.jobs:
        scale = (job.result or {}).get("avd_scale")
        if isinstance(scale, list) and len(scale) == 2:
            return f"{scale[0]:g}–{scale[1]:g}"
    return "(unknown)"


def missing_section(run: RunData) -> Section:
    section = Section("missing", "Missing and failed jobs",
                      "Jobs without a finished result; they are not part of any mean.")
    rows: list[list[str]] = []
    order = {FAILED: 0, STARTED: 1}
    unfinished = sorted((j for j in run.jobs if j.status in order),
                        key=lambda j: (order[j.status], j.label, j.fold, j.seed))
    labels = {cell.id: cell.label for cell in run.cells}
    for job in unfinished:
        error = (job.result or {}).get("error", "") if job.status == FAILED else \
            "no result.json yet (running or interrupted)"
        rows.append([job.status, labels[job.cell], job.fold, str(job.seed), job.id, error])
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
                      "Test RMSE per dimension of the cells that predict valence, arousal and "
                      "dominance (two_stage, joint), by modality, mean ± std over folds. Rows "
                      "and the chart's cell per modality are ordered by mean dev RMSE over the "
                      "folds every cell of the modality finished (the chart shows the lowest: "
                      "chosen on dev, reported on test).")
    cells = [c for c in comparable(run) if any(has_metric(c, f"{d}_rmse") for d in AVD_NAMES)]
    if not cells:
        section.empty = "No cell predicts valence/arousal/dominance (no two_stage or joint cell)."
        return section
    dims = dims_present(cells)

    def dev_rmse(cell: CellRecord) -> float:
        values = [cell_summary(cell, f"{d}_rmse", "dev").mean for d in dims]
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else math.inf

    def dev_rmse_by_fold(cell: CellRecord) -> dict[str, float]:
        """Per fold with every dimension's dev RMSE, their mean."""
        per_dim = [fold_means(cell.values(f"{d}_rmse", "dev")) for d in dims]
        folds = set.intersection(*(set(p) for p in per_dim))
        return {f: float(np.mean([p[f] for p in per_dim])) for f in sorted(folds)}

    rows, series = [], {}
    for modalities, title in (((("text",), "Text only"), (("audio",), "Audio only"),
                               (("text", "audio"), "Text + audio"))):
        members = [c for c in cells if c.modalities == modalities]
        ranking = rank(members, dev_rmse_by_fold, lower_is_better=True,
                       measure="mean dev RMSE")
        if ranking.note(f"Lowest {title.lower()} dev RMSE"):
            section.notes.append(ranking.note(f"Lowest {title.lower()} dev RMSE"))
        unranked = sorted((c for c in members if c not in ranking.cells),
                          key=lambda c: (dev_rmse(c), c.label))
        for cell in [*ranking.cells, *unranked]:
            mean_dev = dev_rmse(cell)
            rows.append([title, cell.label, jobs_cell(cell),
                         DASH if math.isinf(mean_dev) else fmt_value(mean_dev, "rmse"),
                         *[fmt_summary(cell_summary(cell, f"{d}_rmse"), "rmse") for d in dims]])
        if ranking.cells:
            series[f"{title}: {ranking.cells[0].label}"] = [
                cell_summary(ranking.cells[0], f"{d}_rmse") for d in dims]
    section.tables.append(Table(["Modality", "Cell", "Jobs", "Dev RMSE (mean of dims)",
                                 *[f"{d} RMSE (test)" for d in dims]], rows))
    if series:
        section.charts.append(BarChart("Stage-1 test RMSE (per modality: lowest dev RMSE)",
                                       list(dims), series,
                                       f"RMSE, corpus scale {avd_scale_text(run)} "
                                       "(mean ± std over folds)"))
    return section


def confusion_section(run: RunData) -> Section:
    section = Section("confusion", "Error analysis: confusion matrices",
                      f"The {TOP_CONFUSIONS} best cells' ({CHOSEN}) test confusion matrices, "
                      "summed over their finished jobs and normalised per gold row (% of the "
                      "gold class).")
    panels, labels = [], None
    ranking = rank(comparable(run))
    if ranking.note("The best cells"):
        section.notes.append(ranking.note("The best cells"))
    for cell in ranking.cells:
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
        f"Test confusion matrices of the best cells ({CHOSEN}; row-normalised, %)", labels,
        panels))
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
                      "Wall time per job and per phase. Encoder phase: staged text or "
                      "speech encoder fine-tuning, once per (encoder, fold, seed), shared by "
                      "every cell of "
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
            stages.setdefault(_stage_name(run, stage), []).append(stage)
    stage_rows = [[name, str(len(group)),
                   _count_summary([s.get("epochs_run") for s in group]),
                   _seconds_summary([s.get("train_s") for s in group]),
                   _seconds_summary([s.get("total_s") for s in group]),
                   fmt_seconds(sum(float(s.get("total_s") or 0) for s in group))]
                  for name, group in stages.items()]
    if stage_rows:
        section.tables.append(Table(["Encoder", "Stages", "Epochs", "Train", "Total per "
                                     "stage", "Sum"], stage_rows, "Encoder phase"))
    else:
        section.notes.append("No staged text or speech fine-tuning in this run (no encoder "
                             "phase).")
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


def _stage_name(run: RunData, stage: dict[str, Any]) -> str:
    """The recipe name of a stage's text encoder, or speech featurizer (``audio``), config
    (its type when no cell matches)."""
    axis = "audio" if "audio" in stage else "text"
    config = stage.get(axis) or {}
    for cell in run.cells:
        if cell.configs.get(axis) == config and cell.names:
            return str(cell.names.get(axis))
    return str(config.get("type", "?"))

