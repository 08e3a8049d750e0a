"""Read a run folder: the plan, every job's config and result, the text stages.

A run folder holds ``plan.json`` (the planned jobs), ``jobs/<id>/config.json`` (written when
a job starts), ``jobs/<id>/result.json`` (written last; ``done`` or ``failed``) and
``stages/<id>/stage.json`` (staged text- and speech-encoder fine-tuning). Nothing here computes a
statistic; this module only turns files into records, so a run still in progress reads as
what has finished so far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoplug.errors import EmoplugError

#: a job's status: finished, raised, started without a result yet, never started
DONE, FAILED, STARTED, NOT_STARTED = "done", "failed", "started", "not started"
#: the error a job with a damaged ``result.json`` shows (it counts as failed; a run redoes it)
DAMAGED = "result.json is damaged (not valid JSON); running the recipe again redoes this job"
#: the component axes of a cell (a cell's configs and names also hold its ``protocol``)
AXES = ("text", "audio", "fusion", "approach")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; ``None`` when absent or unreadable (half-written)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class JobRecord:
    """One planned (or found) job and what its folder holds so far."""

    id: str
    cell: str
    label: str
    fold: str
    seed: int
    config: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    planned: bool = True

    @property
    def status(self) -> str:
        if self.result is not None:
            return DONE if self.result.get("status") == DONE else FAILED
        return STARTED if self.config is not None else NOT_STARTED

    def split(self, name: str) -> dict[str, Any]:
        """The metrics of split ``name`` (``dev``, ``test``) of a finished job (else empty)."""
        if self.status != DONE:
            return {}
        return (self.result.get("metrics") or {}).get(name) or {}

    @property
    def test(self) -> dict[str, Any]:
        """Test-set metrics of a finished job (empty otherwise)."""
        return self.split("test")

    def metric(self, name: str, split: str = "test") -> float | None:
        value = self.split(split).get(name)
        return float(value) if isinstance(value, (int, float)) else None


@dataclass
class CellRecord:
    """One cell (a combination of components) and its jobs."""

    id: str
    label: str
    jobs: list[JobRecord] = field(default_factory=list)
    names: dict[str, str | None] | None = None
    configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    #: a learning control the cell runs (``permuted_labels``), else None
    control: str | None = None
    #: the ablation switches the cell sets, ``{"fusion.attention": False}`` (from config.json)
    ablations: dict[str, Any] = field(default_factory=dict)

    @property
    def planned(self) -> int:
        return sum(j.planned for j in self.jobs)

    @property
    def done(self) -> list[JobRecord]:
        return [j for j in self.jobs if j.status == DONE]

    @property
    def incomplete(self) -> bool:
        """Fewer finished jobs than planned."""
        return len(self.done) < self.planned

    @property
    def modalities(self) -> tuple[str, ...]:
        if self.names is None:
            return ()
        return tuple(m for m in ("text", "audio") if self.names.get(m) is not None)

    @property
    def protocol_name(self) -> str | None:
        """The recipe's name of the cell's protocol; None for the recipe's default one."""
        return (self.names or {}).get("protocol")

    def type_of(self, axis: str) -> str | None:
        """The component type of ``axis`` (text, audio, fusion, approach), if known."""
        config = self.configs.get(axis)
        return None if config is None else config.get("type")

    def by_pair(self) -> dict[tuple[str, int], JobRecord]:
        """Finished jobs by (fold, seed)."""
        return {(j.fold, j.seed): j for j in self.done}

    def values(self, metric: str, split: str = "test") -> dict[tuple[str, int], float | None]:
        """One metric of every finished job, by (fold, seed)."""
        return {(j.fold, j.seed): j.metric(metric, split) for j in self.done}

    def test_train_ratios(self) -> dict[str, float]:
        """Per fold, n_test / n_train of its finished jobs' split sizes (``sizes`` in
        ``result.json``; averaged over seeds); folds without recorded sizes are left out."""
        ratios: dict[str, list[float]] = {}
        for job in self.done:
            sizes = job.result.get("sizes") or {}
            train, test = sizes.get("train"), sizes.get("test")
            if isinstance(train, int) and isinstance(test, int) and train > 0:
                ratios.setdefault(job.fold, []).append(test / train)
        return {fold: sum(v) / len(v) for fold, v in ratios.items()}


@dataclass
class RunData:
    """Everything a report reads from one run folder."""

    path: Path
    plan: dict[str, Any] | None
    cells: list[CellRecord]
    stages: list[dict[str, Any]]
    unplanned: int = 0
    #: the paired t-test of every comparison: ``corrected`` (Nadeau–Bengio) or ``plain``
    stats: str = "corrected"
    #: ``result.json`` files that are not valid JSON (their jobs count as failed)
    damaged: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.plan is not None:
            return str(self.plan.get("recipe", {}).get("name", self.path.name))
        return self.path.name

    @property
    def jobs(self) -> list[JobRecord]:
        return [j for c in self.cells for j in c.jobs]

    def count(self, status: str) -> int:
        return sum(j.status == status for j in self.jobs)


def load_run(run_dir: Path) -> RunData:
    """Read ``run_dir``; an ``EmoplugError`` when it is not an emoplug run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EmoplugError(f"{run_dir}: not a folder (expected an emoplug run folder)")
    plan = read_json(run_dir / "plan.json")
    if plan is None and (run_dir / "plan.json").is_file():
        raise EmoplugError(f"{run_dir / 'plan.json'}: damaged (not a JSON object), so the "
                           "planned jobs are unknown; every plan the folder had is kept under "
                           "plans/, and running the recipe again with --force rewrites it")
    job_dirs = sorted(p for p in (run_dir / "jobs").glob("*") if p.is_dir())
    if plan is None and not any((p / "result.json").is_file() for p in job_dirs):
        raise EmoplugError(f"{run_dir}: not an emoplug run folder (no plan.json and no "
                           "jobs/*/result.json)")

    jobs: dict[str, JobRecord] = {}
    try:
        for entry in (plan or {}).get("jobs", []):
            jobs[entry["id"]] = JobRecord(entry["id"], entry["cell"], entry["label"],
                                          str(entry["fold"]), int(entry["seed"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise EmoplugError(f"{run_dir / 'plan.json'}: a job entry lacks a valid "
                           f"{exc.args[0] if isinstance(exc, KeyError) else 'value'} "
                           "(is this an emoplug run folder?)") from None
    unplanned = 0
    damaged: list[Path] = []
    for folder in job_dirs:
        config = read_json(folder / "config.json")
        result = read_json(folder / "result.json")
        if result is None and (folder / "result.json").is_file():  # written whole or not at
            result = {"status": FAILED, "error": DAMAGED}  # all: someone else damaged it
            damaged.append(folder / "result.json")
        if folder.name not in jobs:
            if plan is not None:
                unplanned += 1  # a job of an earlier plan: left out, counted
                continue
            source = config or result or {}
            if not all(key in source for key in ("cell", "fold", "seed")):
                continue
            jobs[folder.name] = JobRecord(
                folder.name, source["cell"], source.get("cell_label", source["cell"]),
                str(source["fold"]), int(source["seed"]), planned=False)
        jobs[folder.name].config = config
        jobs[folder.name].result = result

    cells: dict[str, CellRecord] = {}
    for job in jobs.values():
        cell = cells.setdefault(job.cell, CellRecord(job.cell, job.label))
        cell.jobs.append(job)
        _describe(cell, job)
    for cell in cells.values():
        cell.label = _label_with_speech_mode(cell, _label_with_text_mode(cell))
    stages = [s for s in (read_json(p) for p in sorted((run_dir / "stages").glob("*/stage.json")))
              if s is not None]
    return RunData(run_dir, plan, list(cells.values()), stages, unplanned, damaged=damaged)


def _describe(cell: CellRecord, job: JobRecord) -> None:
    """Fill the cell's names, component configs and protocol from the job's files."""
    if job.config is not None and not cell.configs:
        cell.configs = {axis: job.config.get(axis) for axis in (*AXES, "protocol")}
        cell.protocol = dict(job.config.get("protocol") or {})
        cell.control = job.config.get("control")
        cell.ablations = dict(job.config.get("ablations") or {})
    for source in (job.config, job.result if job.status == DONE else None):
        names = (source or {}).get("names")
        if cell.names is None and isinstance(names, dict):
            cell.names = {axis: names.get(axis) for axis in (*AXES, "protocol")}
    if job.status == DONE:
        cell.protocol = {**cell.protocol, **(job.result.get("protocol") or {})}


def _label_with_text_mode(cell: CellRecord) -> str:
    """The cell's label with how its text encoder trains: ``bert[staged:multitask]+mfcc/…``,
    ``roberta_e2e[finetune]/none/direct``; unchanged without text or a known config."""
    text = cell.configs.get("text")
    name = (cell.names or {}).get("text")
    if not text or not name or not cell.label.startswith(name):
        return cell.label
    mode = text.get("mode", "finetune")
    if mode == "staged" and text.get("stage_objective"):
        mode = f"staged:{text['stage_objective']}"
    return f"{name}[{mode}]{cell.label[len(name):]}"


def _label_with_speech_mode(cell: CellRecord, label: str) -> str:
    """``label`` with how the cell's speech encoder trains when it is not frozen:
    ``w2v[finetune]/none/direct``, ``bert[staged:multitask]+w2v[staged:category]/early/…``."""
    audio = cell.configs.get("audio")
    name = (cell.names or {}).get("audio")
    mode = (audio or {}).get("mode", "frozen")
    if not audio or not name or mode == "frozen":
        return label
    if mode == "staged" and audio.get("stage_objective"):
        mode = f"staged:{audio['stage_objective']}"
    start = 0 if label.startswith(f"{name}/") else label.find(f"+{name}/") + 1
    if start == 0 and not label.startswith(f"{name}/"):
        return label
    end = start + len(name)
    return f"{label[:end]}[{mode}]{label[end:]}"
