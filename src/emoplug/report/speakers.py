"""The report's per-speaker section: test UA of each test speaker for the best cells.

Under a speaker-independent protocol every speaker is tested by a network that never heard
them, and a mean over folds hides how unequal the speakers are. For the best text-only,
audio-only and multimodal cells (chosen on dev UA), each speaker's UA is computed from the
jobs' ``predictions.csv`` (the utterances of that speaker in the test set; seeds averaged within
the fold, the seed SD beside it), with the mean and the spread over speakers, and the report
names the hardest speakers: the lowest UA averaged over the cells shown.
"""

from __future__ import annotations

import math

import numpy as np

from emoplug.report.collect import CellRecord, RunData
from emoplug.report.comparisons import MODALITY_GROUPS
from emoplug.report.figures import BarChart
from emoplug.report.predictions import read_predictions, unweighted_accuracy
from emoplug.report.select import CHOSEN, comparable, rank
from emoplug.report.stats import Summary, fold_summary, seed_spread, summarize
from emoplug.report.tables import DASH, Section, Table, fmt_summary, fmt_value

#: how many of the hardest speakers the section names
HARDEST = 3


def speaker_scores(run: RunData, cell: CellRecord) -> tuple[dict[str, dict], dict[str, int], int]:
    """Per test speaker, UA by (fold, seed); per speaker, their test utterances (in one job);
    and how many finished jobs had no speaker column (files written before it existed)."""
    scores: dict[str, dict[tuple[str, int], float]] = {}
    sizes: dict[str, int] = {}
    unknown = 0
    for job in cell.done:
        predictions = read_predictions(run, job)
        if predictions is None or predictions.speakers is None:
            unknown += 1
            continue
        speakers = np.array(predictions.speakers)
        for speaker in sorted(set(predictions.speakers)):
            mask = speakers == speaker
            scores.setdefault(speaker, {})[(job.fold, job.seed)] = unweighted_accuracy(
                predictions.gold[mask], predictions.predicted[mask])
            sizes.setdefault(speaker, int(mask.sum()))
    return scores, sizes, unknown


def speakers_section(run: RunData) -> Section:
    section = Section("speakers", "Per-speaker results",
                      f"Test UA of each test speaker for the best text-only, audio-only and "
                      f"multimodal cells ({CHOSEN}), from the jobs' predictions: a speaker's "
                      "UA over their test utterances, seeds averaged within the fold (± the "
                      "seed SD), then the mean and the spread (SD) over speakers. Shown under "
                      "speaker-independent protocols only.")
    independent = [c for c in comparable(run) if c.protocol.get("speaker_dependent") is False]
    if not independent:
        section.empty = ("No cell ran under a speaker-independent protocol (per-speaker test "
                         "UA would mix in speakers seen in training).")
        return section
    chosen, missing = [], 0
    for modalities, title in MODALITY_GROUPS:
        ranking = rank(c for c in independent if c.modalities == modalities)
        if not ranking.cells:
            continue
        cell = ranking.cells[0]
        scores, sizes, unknown = speaker_scores(run, cell)
        missing += unknown
        if scores:
            chosen.append((title, cell, scores, sizes))
    unknown = (f"{missing} finished jobs of these cells have no speaker column in "
               "predictions.csv (written by an earlier emoplug)")
    if not chosen:
        section.empty = ("No job of the best cells wrote per-utterance predictions with "
                         "speakers" + (f": {unknown}." if missing else "."))
        return section
    if missing:
        section.notes.append(f"{unknown}: they are left out.")
    speakers = sorted({s for *_, scores, _ in chosen for s in scores})
    sizes = {s: next(z[s] for *_, z in chosen if s in z) for s in speakers}
    summaries = {cell.id: {s: _with_seed_sd(scores[s]) for s in scores}
                 for _, cell, scores, _ in chosen}
    rows = []
    for speaker in speakers:
        row = [speaker, str(sizes[speaker])]
        for _, cell, scores, _ in chosen:
            if speaker not in scores:
                row.append(DASH)
                continue
            row.append(fmt_summary(summaries[cell.id][speaker], "ua"))
        rows.append(row)
    over = {cell.id: summarize([s.mean for s in summaries[cell.id].values()])
            for _, cell, _, _ in chosen}
    rows.append(["Mean ± SD over speakers", DASH,
                 *[fmt_summary(over[cell.id], "ua") for _, cell, _, _ in chosen]])
    columns = ["Speaker", "Test utterances",
               *[f"{title}: {cell.label}" for title, cell, _, _ in chosen]]
    section.tables.append(Table(columns, rows, "Test UA per speaker (%; ± seed SD)",
                                note="UA per test speaker; a speaker is tested in one fold, "
                                     "its seeds averaged (± their SD); the last row: mean ± "
                                     "SD over speakers.",
                                summary_rows=1))
    section.charts.append(BarChart(
        "Test UA per speaker (best cells, chosen on dev UA)", speakers,
        {f"{title}: {cell.label}": [_percent(summaries[cell.id].get(s)) for s in speakers]
         for title, cell, _, _ in chosen}, "test UA (%), ± seed SD"))
    section.notes.append(_hardest(speakers, chosen, summaries))
    return section


def _with_seed_sd(values: dict[tuple[str, int], float]) -> Summary:
    """A speaker's UA: the mean over folds of the seed means, with the seed SD as its std
    (a speaker is tested in one fold under a speaker-independent protocol)."""
    mean = fold_summary(values)
    return Summary(mean.mean, seed_spread(values), mean.n)


def _percent(summary: Summary | None) -> Summary:
    if summary is None:
        return Summary(math.nan, math.nan, 0)
    return Summary(100 * summary.mean, 100 * summary.std, summary.n)


def _hardest(speakers: list[str], chosen: list, summaries: dict[str, dict[str, Summary]]
             ) -> str:
    """One line naming the speakers with the lowest UA averaged over the cells shown."""
    average = {s: float(np.mean([summaries[cell.id][s].mean for _, cell, _, _ in chosen
                                 if s in summaries[cell.id]])) for s in speakers}
    order = sorted(speakers, key=lambda s: (average[s], s))
    named = ", ".join(f"{s} ({fmt_value(average[s], 'ua')})" for s in order[:HARDEST])
    easiest = order[-1]
    cells = f"{len(chosen)} cells" if len(chosen) > 1 else "1 cell"
    return (f"Hardest speakers (lowest test UA averaged over the {cells} shown): "
            f"{named}; easiest: {easiest} ({fmt_value(average[easiest], 'ua')}). Spread over "
            f"speakers: {fmt_value(max(average.values()) - min(average.values()), 'ua')} "
            "points from the hardest to the easiest.")
