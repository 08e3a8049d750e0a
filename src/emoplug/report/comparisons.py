"""The report's paired comparisons: which cells are compared, and the table of their tests.

Every comparison is paired at the fold level (seeds averaged within each fold, n = folds),
tested with the run's t-test (``RunData.stats``: Nadeau–Bengio's corrected resampled t-test
by default, the plain one when asked), and every table is one Holm family per metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from itertools import combinations

import numpy as np

from emoplug.report.collect import CellRecord, RunData
from emoplug.report.figures import BarChart, ForestPlot
from emoplug.report.select import (
    CHOSEN,
    cell_summary,
    comparable,
    dims_present,
    floor_cells,
    floor_summary,
    fold_floors,
    is_ablation,
    jobs_cell,
    rank,
    reference_protocol,
    twin_of,
)
from emoplug.report.stats import (
    MIN_WILCOXON,
    PLAIN,
    PairedTest,
    Summary,
    fold_means,
    matched_fold_means,
    paired_test,
    summarize,
    with_holm,
)
from emoplug.report.tables import (
    CLASS_METRICS,
    DASH,
    Section,
    Table,
    fmt_diff,
    fmt_p,
    fmt_summary,
    metric_title,
)

#: metrics of the paired comparisons
PAIRED_METRICS = ("ua", "wa")
PAIRED_COLUMNS = ["Metric", "n (folds)", "Mean A", "Mean B", "A − B [95% CI]", "t-test p",
                  "Holm p", "Wilcoxon p"]
#: the footnote of a table of cells' scores
CELL_NOTE = ("n = folds; test scores as mean ± sample std over the fold means (a fold's seeds "
             "averaged first); best cells chosen on dev UA.")
#: text or speech encoder settings that make a cell staged or end to end (compared in their
#: own section)
TEXT_TRAINING_KEYS = frozenset({"mode", "stage_objective"})
#: each modality's mode when its encoder is left out of the config
DEFAULT_MODES = {"text": "finetune", "audio": "frozen"}
#: a comparison: its name, and the per-fold values of A and B by metric
Comparison = tuple[str, CellRecord, CellRecord]


def split_ratio(cells: Iterable[CellRecord], folds: Iterable[str]) -> float | None:
    """n_test/n_train for the Nadeau–Bengio correction: the mean over ``folds`` and
    ``cells`` of the ratios their jobs recorded; None when no job recorded its split sizes."""
    folds = set(folds)
    values = [ratio for cell in cells for fold, ratio in cell.test_train_ratios().items()
              if fold in folds]
    return float(np.mean(values)) if values else None


def run_test(run: RunData, mean_a: Sequence[float], mean_b: Sequence[float],
             cells: Iterable[CellRecord], folds: Iterable[str]) -> PairedTest:
    """The run's paired t-test of matched fold means: plain, or corrected with the ratio
    n_test/n_train of ``cells`` on ``folds``. Without recorded split sizes the corrected
    test cannot be computed: its p-value and interval are left undefined (``nan``)."""
    if run.stats == PLAIN:
        return paired_test(mean_a, mean_b)
    ratio = split_ratio(cells, folds)
    if ratio is None:
        plain = paired_test(mean_a, mean_b)
        return replace(plain, ci_low=math.nan, ci_high=math.nan, t_p=math.nan)
    return paired_test(mean_a, mean_b, ratio)


def paired_cells(run: RunData, a: CellRecord, b: CellRecord, metric: str) -> PairedTest:
    """``a − b`` on ``metric`` over the folds both finished (seeds averaged within a fold)."""
    folds, mean_a, mean_b = matched_fold_means(a.values(metric), b.values(metric))
    return run_test(run, mean_a, mean_b, (a, b), folds)


def tests_footnote(run: RunData, tests: Sequence[PairedTest]) -> str:
    """The footnote of a table of paired tests: n, which t-test, Holm, Wilcoxon."""
    text = "n counts folds (each cell's seeds averaged within a fold). "
    if run.stats == PLAIN:
        text += ("t-test p: the plain paired t-test (uncorrected: anti-conservative under "
                 "cross-validation, whose training sets overlap; shown because `--stats plain` "
                 "was asked), its 95% CI from sd/√n. ")
    else:
        ratios = sorted({round(t.test_train, 3) for t in tests if t.corrected})
        shown = "–".join(f"{r:.3f}" for r in (ratios[0], ratios[-1])) if len(ratios) > 1 \
            else (f"{ratios[0]:.3f}" if ratios else "n/a")
        text += ("t-test p: the Nadeau–Bengio corrected resampled t-test (variance of the mean "
                 f"difference sd²·(1/n + n_test/n_train), n_test/n_train = {shown} from the "
                 "jobs' split sizes; the 95% CI widened alike). ")
        if any(t.n > 1 and not t.corrected for t in tests):
            text += ("A dash for p and CI: the jobs recorded no split sizes, so the corrected "
                     "test cannot be computed (`emoplug report --stats plain` shows the "
                     "uncorrected one). ")
    return text + ("Holm p: that p-value corrected by Holm's method over this table's "
                   f"comparisons of the same metric. Wilcoxon p only with at least "
                   f"{MIN_WILCOXON} folds.")


def paired_table(run: RunData, section: Section, comparisons: list[Comparison],
                 first: str) -> None:
    """Tests of ``a − b`` for each comparison and metric (Holm within each metric), and a
    forest plot of the first metric."""
    tests = {m: with_holm([paired_cells(run, a, b, m) for _, a, b in comparisons])
             for m in PAIRED_METRICS}
    _tests_table(run, section, [name for name, _, _ in comparisons], tests, first)


def _tests_table(run: RunData, section: Section, names: list[str],
                 tests: dict[str, list[PairedTest]], first: str,
                 extra: list[str] | None = None) -> None:
    rows = []
    for i, name in enumerate(names):
        for metric in PAIRED_METRICS:
            rows.append([name, *([extra[i]] if extra else []), *_test_cells(tests[metric][i],
                                                                             metric)])
    kind = "plain" if run.stats == PLAIN else "corrected"
    columns = [first, *(["Cell pairs"] if extra else []),
               *[f"t-test p ({kind})" if c == "t-test p" else c for c in PAIRED_COLUMNS]]
    note = tests_footnote(run, [t for m in PAIRED_METRICS for t in tests[m]])
    section.tables.append(Table(columns, rows, note=note))
    section.notes.append(note)
    lead = tests[PAIRED_METRICS[0]]
    if any(t.n for t in lead):
        scaled = [replace(t, **{k: 100 * getattr(t, k) for k in (
            "mean_a", "mean_b", "mean_diff", "std_diff", "ci_low", "ci_high")}) for t in lead]
        metric = metric_title(PAIRED_METRICS[0])
        section.charts.append(ForestPlot(f"{section.title}: paired difference in {metric}",
                                         names, scaled,
                                         f"A − B, {metric} (percentage points, 95% CI, "
                                         f"{kind} t; n = folds)"))


def _test_cells(test: PairedTest, metric: str) -> list[str]:
    mean_a, mean_b = (Summary(m, math.nan, test.n) for m in (test.mean_a, test.mean_b))
    return [metric_title(metric), str(test.n), fmt_summary(mean_a, metric),
            fmt_summary(mean_b, metric), fmt_diff(test, metric), fmt_p(test.t_p),
            fmt_p(test.holm_p), fmt_p(test.wilcoxon_p)]


def differing_keys(a: CellRecord, b: CellRecord) -> list[tuple[str, str]]:
    """The (axis, key) settings in which two cells' component configs differ."""
    keys = []
    for axis in sorted(set(a.configs) | set(b.configs)):
        mine, theirs = a.configs.get(axis), b.configs.get(axis)
        if mine is None or theirs is None:
            if mine != theirs:
                keys.append((axis, "*"))
            continue
        keys += [(axis, k) for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    return keys


# -- direct vs two-stage ----------------------------------------------------------------------

def approach_pairs(run: RunData) -> list[tuple[CellRecord, CellRecord]]:
    """Pairs of cells whose resolved configs differ only in the approach, which is of
    another type in each (its settings may differ too); A is the cell whose approach type
    sorts first (``direct`` before ``two_stage``)."""
    pairs = []
    for a, b in combinations(comparable(run), 2):
        keys = differing_keys(a, b)
        if ("approach", "type") not in keys or any(axis != "approach" for axis, _ in keys):
            continue
        pairs.append((a, b) if a.type_of("approach") < b.type_of("approach") else (b, a))
    return sorted(pairs, key=lambda pair: (pair[0].label, pair[1].label))


def approach_section(run: RunData) -> Section:
    section = Section("approach", "Approach comparison",
                      "Cells whose configs differ only in the decision approach (same text, "
                      "audio and fusion): A = the approach whose type sorts first (direct "
                      "before two_stage), B = the other. A − B > 0 means A is better.")
    pairs = approach_pairs(run)
    if not pairs:
        section.empty = "No pair of cells differing only in the approach."
        return section
    comparisons = []
    for a, b in pairs:
        inputs = "+".join(n for n in (a.names["text"], a.names["audio"]) if n)
        name = f"{inputs}/{a.names['fusion']}: {a.names['approach']} vs {b.names['approach']}"
        comparisons.append((name, a, b))
    paired_table(run, section, comparisons, "Comparison")
    return section


# -- modality importance ----------------------------------------------------------------------

MODALITY_GROUPS = ((("text",), "Text only"), (("audio",), "Audio only"),
                   (("text", "audio"), "Text + audio"))


def modality_section(run: RunData) -> Section:
    section = Section("modality", "Modality importance",
                      f"The best text-only, audio-only and multimodal cells ({CHOSEN}, "
                      "reported on test), and paired tests of the best multimodal cell against "
                      "the best single-modality ones.")
    cells = comparable(run)
    metrics = [m for m, _ in CLASS_METRICS]
    rows, series, chosen = [], {}, {}
    for modalities, title in MODALITY_GROUPS:
        ranking = rank(c for c in cells if c.modalities == modalities)
        cell = ranking.cells[0] if ranking.cells else None
        if ranking.note(f"Best {title.lower()} cell"):
            section.notes.append(ranking.note(f"Best {title.lower()} cell"))
        if cell is None:
            section.notes.append(f"No {title.lower()} cell with dev results in this run.")
            continue
        chosen[modalities] = cell
        summaries = [cell_summary(cell, m) for m in metrics]
        rows.append([title, cell.label, jobs_cell(cell), str(summaries[0].n),
                     fmt_summary(cell_summary(cell, "ua", "dev"), "ua"),
                     *[fmt_summary(s, m) for s, m in zip(summaries, metrics, strict=True)]])
        series[f"{title}: {cell.label}"] = [Summary(100 * s.mean, 100 * s.std, s.n)
                                             for s in summaries]
    if not rows:
        section.empty = "No cell with dev results (nothing can be chosen)."
        return section
    floors = fold_floors(run, reference_protocol(run))
    if floors:
        rows.append(["Majority-class floor", "always the training majority", DASH,
                     str(len(floors)), DASH, *floor_cells(floors, metrics)])
    section.tables.append(Table(["Modalities", f"Best cell ({CHOSEN})", "Jobs", "n (folds)",
                                 "Dev UA", *[f"{metric_title(m)} (test)" for m in metrics]],
                                rows, note=CELL_NOTE,
                                best={f"{metric_title(m)} (test)": "max" for m in metrics},
                                summary_rows=1 if floors else 0))
    section.charts.append(BarChart("Best cell per modality (chosen on dev UA), test scores",
                                   [metric_title(m) for m in metrics], series,
                                   "test score (%, mean ± std over folds)"))
    multi = chosen.get(("text", "audio"))
    comparisons = [(f"{multi.label} vs {single.label}", multi, single)
                   for key in (("text",), ("audio",)) if multi and (single := chosen.get(key))]
    if comparisons:
        paired_table(run, section, comparisons, "A vs B")
    return section


# -- comparisons of one component axis --------------------------------------------------------

def group_comparisons(run: RunData, cells: list[CellRecord], axis: str, metric: str
                      ) -> list[tuple[str, str, int, PairedTest]]:
    """Each pair of ``axis`` values (A, B) compared on the cells that match on every other
    axis: per fold, the mean over matched cell pairs of each side's fold mean, then a paired
    test over the folds. Returns (A, B, matched cell pairs, test)."""
    others = [a for a in ("text", "audio", "fusion", "approach", "protocol") if a != axis]
    groups: dict[str, dict[tuple, CellRecord]] = {}
    for cell in cells:
        groups.setdefault(cell.names[axis], {})[tuple(cell.names[a] for a in others)] = cell
    out = []
    for name_a, name_b in combinations(sorted(groups), 2):
        matched = [(groups[name_a][k], groups[name_b][k])
                   for k in sorted(set(groups[name_a]) & set(groups[name_b]), key=str)]
        per_fold: dict[str, list[tuple[float, float]]] = {}
        for a, b in matched:
            folds, mean_a, mean_b = matched_fold_means(a.values(metric), b.values(metric))
            for fold, x, y in zip(folds, mean_a, mean_b, strict=True):
                per_fold.setdefault(fold, []).append((x, y))
        folds = sorted(per_fold)
        test = run_test(run, [float(np.mean([x for x, _ in per_fold[f]])) for f in folds],
                        [float(np.mean([y for _, y in per_fold[f]])) for f in folds],
                        [c for pair in matched for c in pair], folds)
        out.append((name_a, name_b, len(matched), test))
    return out


def grouped_section(run: RunData, axis: str, key: str, title: str, text: str) -> Section:
    """Cells grouped by the component on ``axis`` (text encoder, audio feature, fusion)."""
    section = Section(key, title, text + " A row averages, per fold, the fold means of the "
                      "group's cells, then gives mean ± std over folds (n = folds). The pairs "
                      "below compare two groups on the cells that match on every other "
                      "component and the approach.")
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
    metrics = [m for m, _ in CLASS_METRICS]
    dims = [f"{d}_rmse" for d in dims_present(cells)]
    rows, series = [], {metric_title(m): [] for m in metrics}
    for name, group in groups.items():
        kinds = {c.type_of(axis) for c in group} - {None, name}
        label = f"{name} ({', '.join(sorted(kinds))})" if kinds else name
        ranking = rank(group)
        winner = ranking.cells[0] if ranking.cells else None
        if ranking.note(f"Best {label} cell"):
            section.notes.append(ranking.note(f"Best {label} cell"))
        summaries = {m: _group_summary(group, m) for m in [*metrics, *dims]}
        rows.append([label, str(len(group)), str(summaries["ua"].n),
                     *[fmt_summary(summaries[m], m) for m in [*metrics, *dims]],
                     winner.label if winner else DASH,
                     fmt_summary(cell_summary(winner, "ua"), "ua") if winner else DASH])
        for m in metrics:
            s = summaries[m]
            series[metric_title(m)].append(Summary(100 * s.mean, 100 * s.std, s.n))
    section.tables.append(Table([axis.capitalize(), "Cells", "n (folds)",
                                 *[metric_title(m) for m in [*metrics, *dims]],
                                 f"Best cell ({CHOSEN})", "Its test UA"], rows,
                                note=CELL_NOTE + " A group's row averages its cells per fold.",
                                best={**{metric_title(m): "max" for m in metrics},
                                      **{metric_title(m): "min" for m in dims}}))
    section.charts.append(BarChart(title, list(groups), series,
                                   "test score (%, mean ± std over folds)"))
    if len(groups) > 1:
        tests = {m: group_comparisons(run, cells, axis, m) for m in PAIRED_METRICS}
        corrected = {m: with_holm([t for *_, t in tests[m]]) for m in PAIRED_METRICS}
        names = [f"{a} vs {b}" for a, b, _, _ in tests[PAIRED_METRICS[0]]]
        pairs = [str(k) for _, _, k, _ in tests[PAIRED_METRICS[0]]]
        _tests_table(run, section, names, corrected, "A vs B", pairs)
    return section


def _group_summary(group: list[CellRecord], metric: str) -> Summary:
    """Mean ± std over folds of the group's per-fold average of its cells' fold means."""
    per_fold: dict[str, list[float]] = {}
    for cell in group:
        for fold, value in fold_means(cell.values(metric)).items():
            per_fold.setdefault(fold, []).append(value)
    return summarize([float(np.mean(v)) for v in per_fold.values()])


# -- ablations, staged vs end to end, one-setting comparisons, controls -----------------------

def ablation_of(cell: CellRecord, full: CellRecord) -> list[str] | None:
    """The switches that turn ``full`` into ``cell`` (its only differences), else ``None``."""
    if cell is full or cell.names is None or full.names is None or is_ablation(full) \
            or cell.control is not None or full.control is not None:
        return None
    keys = [f"{axis}.{key}" for axis, key in differing_keys(cell, full)]
    if not keys or any(k not in cell.ablations for k in keys):
        return None
    return [f"{key}={str(cell.ablations[key]).lower()}" for key in keys]


def ablation_section(run: RunData) -> Section:
    cells = [c for c in run.cells if c.done and c.names is not None]
    switches = sorted({f"{k}={str(v).lower()}" for c in cells for k, v in c.ablations.items()})
    section = Section("ablation", "Ablations",
                      "Each ablated cell against its full model (the cell whose configs differ "
                      "only in the switch): A = ablated, B = full. A switch is a setting its "
                      "component declares as an ablation"
                      + (f"; in this run: {', '.join(switches)}." if switches else "."))
    comparisons = []
    for cell in cells:
        for full in cells:
            switched = ablation_of(cell, full)
            if switched:
                comparisons.append((f"{full.label}: {', '.join(switched)}", cell, full))
    if not comparisons:
        section.empty = "No ablation cell with a full-model sibling in this run."
        return section
    paired_table(run, section, comparisons, "Full model: ablation")
    return section


def encoder_mode(cell: CellRecord, modality: str) -> str | None:
    """How the cell's ``text`` or ``audio`` encoder trains (None without that modality)."""
    config = cell.configs.get(modality)
    return None if config is None else config.get("mode", DEFAULT_MODES[modality])


def staged_pairs(run: RunData) -> list[tuple[CellRecord, CellRecord]]:
    """(end-to-end cell, staged cell) whose configs differ only in how the text encoder, or
    the speech encoder, trains (``mode``, ``stage_objective``)."""
    cells = comparable(run)
    pairs = []
    for modality in ("text", "audio"):
        for e2e in cells:
            if encoder_mode(e2e, modality) != "finetune":
                continue
            for staged in cells:
                if encoder_mode(staged, modality) != "staged":
                    continue
                keys = differing_keys(e2e, staged)
                if keys and all(axis == modality and key in TEXT_TRAINING_KEYS
                                for axis, key in keys):
                    pairs.append((e2e, staged))
    return pairs


def staged_section(run: RunData) -> Section:
    section = Section("staged", "Staged vs end-to-end",
                      "Cells that differ only in how the text encoder or the speech encoder "
                      "trains: A = end to end (`mode: finetune`, the encoder trained with the "
                      "cell's fusion and approach in every job), B = staged (`mode: staged`, "
                      "fine-tuned once per fold and seed with a text-only or speech-only head "
                      "on its `stage_objective`, then frozen for every cell). A − B > 0 means "
                      "end-to-end training is better.")
    pairs = staged_pairs(run)
    if not pairs:
        section.empty = ("No pair of cells differing only in the text or speech encoder's "
                         "mode (finetune vs staged).")
        return section
    paired_table(run, section, [(f"{a.label} vs {b.label}", a, b) for a, b in pairs], "A vs B")
    return section


def setting_pairs(run: RunData) -> list[tuple[str, CellRecord, CellRecord]]:
    """Pairs of cells whose configs differ in exactly one setting that no other section
    compares (not a component type, an ablation switch or the text training mode), A the
    cell whose value sorts first."""
    cells = comparable(run)
    out = []
    for a, b in combinations(cells, 2):
        keys = differing_keys(a, b)
        if len(keys) != 1:
            continue
        axis, key = keys[0]
        if key in ("type", "*") or axis == "protocol" or \
                f"{axis}.{key}" in {**a.ablations, **b.ablations} or \
                (axis == "text" and key in TEXT_TRAINING_KEYS) or \
                (axis == "audio" and key == "mode" and
                 {encoder_mode(a, "audio"), encoder_mode(b, "audio")} == {"finetune", "staged"}):
            continue
        value_a, value_b = a.configs[axis].get(key), b.configs[axis].get(key)
        if str(value_b) < str(value_a):
            a, b, value_a, value_b = b, a, value_b, value_a
        out.append((f"{axis}.{key}: {value_a} vs {value_b} ({a.label})", a, b))
    return sorted(out, key=lambda c: c[0])


def setting_section(run: RunData) -> Section:
    section = Section("settings", "One-setting comparisons",
                      "Cells whose configs differ in exactly one setting (for example "
                      "`approach.mapper_fit_on` or a class weighting), paired at the fold "
                      "level: A = the cell whose value sorts first, B = the other.")
    comparisons = setting_pairs(run)
    if not comparisons:
        section.empty = "No pair of cells differing in exactly one setting."
        return section
    paired_table(run, section, comparisons, "Setting: A vs B (cell A)")
    return section


def control_section(run: RunData) -> Section:
    section = Section("control", "Learning control",
                      "Each control cell trains like its twin on training labels permuted "
                      "within the training fold (dev and test labels untouched). A model that "
                      "learns from the labels keeps the control near the majority-class floor; "
                      "a control well above the floor means the cell can score without "
                      "learning the label mapping (leakage through the split or a shared "
                      "stage). A = the twin on true labels, B = the control.")
    cells = [c for c in run.cells if c.done and c.control is not None]
    if not cells:
        section.empty = ("No control cell in this run (add an extra cell with "
                         "`control: permuted_labels`).")
        return section
    floors = fold_floors(run, reference_protocol(run))
    floor_ua = floor_summary(floors, "ua")
    rows, comparisons = [], []
    for control in cells:
        twin = twin_of(control, run.cells)
        twin_ua = cell_summary(twin, "ua") if twin else Summary(math.nan, math.nan, 0)
        rows.append([control.label, control.control, jobs_cell(control),
                     twin.label if twin else "no twin in this run", fmt_summary(twin_ua, "ua"),
                     fmt_summary(cell_summary(control, "ua"), "ua"),
                     fmt_summary(floor_ua, "ua")])
        if twin:
            comparisons.append((f"{twin.label} vs its control", twin, control))
    section.tables.append(Table(["Control cell", "Control", "Jobs", "Twin", "Twin UA (test)",
                                 "Control UA (test)", "Majority floor UA"], rows))
    if comparisons:
        paired_table(run, section, comparisons, "A vs B")
    return section

