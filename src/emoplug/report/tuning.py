"""The report's *Tuning* section: what tuning chose per job, and how the search went.

Read from the ``tuning`` record of each finished job's ``result.json`` (written when the
recipe has ``tune:``; see :mod:`emoplug.train.tuning`): the chosen value of every searched
setting per fold and seed, the best dev objective, the trials by state, and a chart of the
best objective so far after each trial, averaged over a cell's jobs.
"""

from __future__ import annotations

import math
from typing import Any

from emoplug.report.collect import CellRecord, RunData
from emoplug.report.figures import LineChart
from emoplug.report.tables import Section, Table


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def best_so_far(record: dict[str, Any]) -> list[float]:
    """The best objective after each trial, in trial order (failed and pruned trials keep
    the best before them; NaN until a trial completes)."""
    maximise = record.get("objective") == "dev_ua"
    best, out = math.nan, []
    for trial in sorted(record.get("trials", []), key=lambda t: t["number"]):
        value = trial.get("value")
        if trial.get("state") == "complete" and value is not None:
            better = value > best if maximise else value < best
            best = value if math.isnan(best) or better else best
        out.append(best)
    return out


def _curve(cell: CellRecord) -> list[float]:
    """The mean over the cell's tuned jobs of :func:`best_so_far`."""
    curves = [best_so_far(j.result["tuning"]) for j in cell.done if j.result.get("tuning")]
    length = min((len(c) for c in curves), default=0)
    out = []
    for step in range(length):
        values = [c[step] for c in curves if not math.isnan(c[step])]
        out.append(sum(values) / len(values) if values else math.nan)
    return out


def tuning_section(run: RunData) -> Section:
    section = Section("tuning", "Tuning",
                      "Settings tuned on dev (tune: in the recipe): per job, the value of "
                      "each searched setting its best trial chose, the best dev objective, "
                      "and its trials by state. The job was then trained with those values "
                      "and scored on test; no trial saw the test split.")
    rows, curves, objective = [], {}, None
    for cell in run.cells:
        tuned = [j for j in cell.done if (j.result or {}).get("tuning")]
        for job in sorted(tuned, key=lambda j: (j.fold, j.seed)):
            record = job.result["tuning"]
            objective = record.get("objective", objective)
            states: dict[str, int] = {}
            for trial in record.get("trials", []):
                states[trial["state"]] = states.get(trial["state"], 0) + 1
            rows.append([cell.label, job.fold, str(job.seed),
                         ", ".join(f"{k}={_value(v)}" for k, v in record["chosen"].items()),
                         _value(record.get("best_value")),
                         ", ".join(f"{n} {s}" for s, n in sorted(states.items()))])
        if tuned:
            curves[cell.label] = _curve(cell)
    if not rows:
        section.empty = "No job was tuned (the recipe has no tune: section)."
        return section
    section.tables.append(Table(["Cell", "Fold", "Seed", "Chosen", f"Best {objective}",
                                 "Trials"], rows, "Chosen on dev, per fold and seed"))
    section.charts.append(LineChart(f"Best {objective} after each trial (mean over jobs)",
                                    curves, "trial", objective or ""))
    return section
