"""Recipes: pydantic models of a YAML recipe, overrides, and expansion into cells and jobs.

A recipe names its components in four sections (``text``, ``audio``, ``fusion``,
``approach``: name -> ``{type: ..., settings}``), then says which combinations to run: a
``grid`` (cartesian product; ``null`` means the modality is absent) and ``extra`` cells.
Each component mapping is validated by its own config model when the recipe loads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emoplug.components import missing_package
from emoplug.data.combine import WITHIN_KEY, combined_info, namespaced, split_protocol
from emoplug.data.loading import CorpusRequest, Split
from emoplug.errors import EmoplugError, RecipeError, dataset_problems
from emoplug.files import default_cache_dir
from emoplug.registry import Registry, get_registry
from emoplug.types import DatasetInfo

COMPONENT_SECTIONS = ("text", "audio", "fusion", "approach")
#: the speech recogniser of a text encoder's ``source: asr`` when its ``asr`` names no type
DEFAULT_RECOGNISER = "whisper"
#: recipe sections whose entries cells name
_NAMED_SECTIONS = (*COMPONENT_SECTIONS, "protocols")
#: training settings that do not change results, left out of job ids
NON_RESULT_TRAIN_KEYS = frozenset({"save", "cohort"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSettings(_Strict):
    """How every job trains (``train:`` in a recipe)."""

    epochs: int = Field(40, ge=1, description="maximum epochs (the linear decay's length)")
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0, description="learning rate of fresh modules (heads, CNNs)")
    encoder_lr: float = Field(2e-5, gt=0, description="learning rate of pretrained encoders "
                              "(text, and speech in mode finetune or staged)")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps warming up")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; null = off")
    patience: int = Field(6, ge=1, description="epochs without dev-loss improvement to stop")
    stage_epochs: int | None = Field(
        None, ge=1, description="epochs of the staged text and speech fine-tunings; default epochs")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    strategy: Literal["jobs", "ddp"] = Field(
        "jobs", description="jobs: shard jobs over processes; ddp: each job data-parallel")
    bucketing: bool = Field(True, description="length-bucketed batches (less padding)")
    cohort: int = Field(16, ge=1, description="head jobs sharing their inputs trained in "
                        "lockstep in one process (1 = one job at a time; same results)")
    save: Literal["none", "best"] = Field("none", description="save each job's best model")
    optimizer: Literal["adamw", "lbfgs"] = Field(
        "adamw", description="adamw: minibatches, linear warmup/decay, early stopping on dev "
        "loss; lbfgs: full-batch L-BFGS to convergence, dropout off, no early stopping "
        "(for cells without a text encoder to fine-tune: on a linear model under "
        "cross-entropy it is scikit-learn's LogisticRegression)")
    C: float = Field(1.0, gt=0, description="lbfgs: inverse L2 strength as scikit-learn's C: "
                     "minimises C * sum(loss) + ||W||^2 / 2 over weight matrices")
    max_iter: int = Field(1000, ge=1, description="lbfgs: most iterations")
    tol: float = Field(1e-6, gt=0, description="lbfgs: converged when no entry of the "
                       "objective's gradient exceeds this (the fit runs in float64)")


#: training settings a cell may set for itself (``extra[i].train``); the rest are the run's
CELL_TRAIN_KEYS = frozenset(TrainSettings.model_fields) - {
    "strategy", "mixed_precision", "cohort", "save", "stage_epochs"}


class SearchRange(_Strict):
    """A numeric range to search: ``low``..``high``, on a log scale with ``log``; integers
    when both bounds are written as integers (write ``0.0`` for a float range from 0)."""

    low: float | int
    high: float | int
    log: bool = False

    @field_validator("high")
    @classmethod
    def _above_low(cls, value: float, info: Any) -> float:
        low = info.data.get("low")
        if low is not None and value <= low:
            raise ValueError(f"high must be above low ({low})")
        return value

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


class TuneSpec(_Strict):
    """Tuning on dev with Optuna (``tune:`` in a recipe): per job (cell, fold, seed), a study
    of ``trials`` over ``space``, scored on the fold's dev split (or its inner folds),
    never on test; the job is then trained with the best trial's settings."""

    trials: int = Field(20, ge=1, description="trials per job (failed and pruned ones count)")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna's TPE or random "
                                              "search, seeded with the job's seed")
    pruner: Literal["none", "successive_halving", "median"] = Field(
        "successive_halving", description="stop unpromising trials early: after each epoch "
        "(fixed dev; the dev loss) or each inner fold (inner_folds; the objective)")
    objective: Literal["dev_ua", "dev_loss"] = Field(
        "dev_ua", description="maximise dev UA, or minimise the best dev loss")
    space: dict[str, SearchRange | list[Any]] = Field(
        min_length=1, description="setting -> range {low, high, log} or a list of choices; "
        "settings are train.<key> or <section>.<key>[.<key>...] of a component (text, audio, "
        "fusion, approach), e.g. train.lr, audio.encoder.hidden, fusion.dropout")


class UnitResources(_Strict):
    """What one unit of a kind asks of a Ray cluster (``--executor ray``)."""

    cpus: float = Field(1.0, gt=0, description="CPU cores per unit")
    gpus: float | None = Field(
        None, ge=0, description="GPUs per unit; a fraction (e.g. 0.125) packs that many units "
        "onto one device; default: 1 when the cluster has GPUs, else 0")

    @field_validator("gpus")
    @classmethod
    def _whole_above_one(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and value != int(value):
            raise ValueError("above 1, GPUs per unit must be a whole number (Ray's rule)")
        return value


class ResourcesSpec(_Strict):
    """Resources per unit kind and retries, for ``emoplug run --executor ray``
    (``resources:`` in a recipe; other executors ignore it, and it is no part of any id)."""

    stage: UnitResources = Field(default_factory=UnitResources,
                                 description="a staged text encoder's fine-tuning")
    job: UnitResources = Field(default_factory=lambda: UnitResources(gpus=None),
                               description="a head job, or a cohort of them")
    max_retries: int = Field(3, ge=0, description="times a unit is run again after its "
                             "worker or node was lost (not after an error of its own)")


class GridSpec(_Strict):
    """Cartesian product of component names; ``null`` in text/audio = modality absent."""

    text: list[str | None] = Field(default_factory=lambda: [None])
    audio: list[str | None] = Field(default_factory=lambda: [None])
    fusion: list[str] = Field(default_factory=lambda: ["none"])
    approach: list[str]
    protocol: list[str] | None = Field(
        None, description="names from the recipe's `protocols`: every cell runs under each; "
                          "null = the recipe's `protocol` alone")


class CellSpec(_Strict):
    """One extra cell (a single-modality run, an ablation, a learning control)."""

    text: str | None = None
    audio: str | None = None
    fusion: str = "none"
    approach: str
    protocol: str | None = Field(
        None, description="a name from the recipe's `protocols`; null = the recipe's `protocol`")
    control: Literal["none", "permuted_labels"] = Field(
        "none", description="permuted_labels: train on the training fold's targets permuted "
        "among its utterances (dev and test keep theirs), a control that should score chance")
    train: dict[str, Any] | None = Field(
        None, description="training settings of this cell's own (its head training; a shared "
        "text stage keeps the recipe's), over the recipe's `train`")


class Recipe(_Strict):
    """A whole study."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    dataset: dict[str, Any] | None = Field(None, description="the corpus (or `datasets`)")
    datasets: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")],
                   dict[str, Any]] | None = Field(
        None, min_length=1, description="several corpora studied together, by name (each "
        "like `dataset`): ids, speakers and sessions are namespaced `<name>/...`")
    label_map: dict[str, dict[str, str | None]] = Field(
        default_factory=dict, description="with `datasets`: per corpus name, each label it "
        "keeps -> a label of the shared set, or null to leave its utterances out")
    protocol: dict[str, Any] = Field(default_factory=lambda: {"type": "loso"})
    protocols: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named protocols that `grid.protocol` or an extra "
                                          "cell's `protocol` runs cells under, beside `protocol`")
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(
        default_factory=lambda: [0], min_length=1)
    train: TrainSettings = Field(default_factory=TrainSettings)
    cache_dir: str | None = None
    output_dir: str | None = None
    text: dict[str, dict[str, Any]] = Field(default_factory=dict)
    audio: dict[str, dict[str, Any]] = Field(default_factory=dict)
    fusion: dict[str, dict[str, Any]] = Field(default_factory=dict)
    approach: dict[str, dict[str, Any]] = Field(default_factory=dict)
    grid: GridSpec | None = None
    extra: list[CellSpec] = Field(default_factory=list)
    tune: TuneSpec | None = Field(None, description="tune every cell's settings on dev")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec,
                                     description="per-unit resources on a Ray cluster")

    @field_validator("dataset", "protocol")
    @classmethod
    def _has_type(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and "type" not in value:
            raise ValueError("needs a 'type'")
        return value

    def data_problems(self) -> list[str]:
        """``dataset`` or ``datasets``, not both; every ``datasets`` entry has a type;
        ``label_map`` names ``datasets`` entries; one line each."""
        if (self.dataset is None) == (self.datasets is None):
            return ["dataset: required key is missing (or give `datasets`: several corpora "
                    "by name)" if self.dataset is None else
                    "datasets: give `dataset` (one corpus) or `datasets` (several), not both"]
        problems = [f"datasets.{name}: needs a 'type'"
                    for name, config in (self.datasets or {}).items() if "type" not in config]
        known = ", ".join(self.datasets or {}) or "none: label_map needs `datasets`"
        problems += [f"label_map.{name}: not a name in `datasets` ({known})"
                     for name in self.label_map if name not in (self.datasets or {})]
        return problems

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        return value


def audio_mode(audio: dict[str, Any] | None) -> str | None:
    """How a cell uses its audio featurizer: ``frozen`` (cached features, the default),
    ``finetune`` (its speech model trained end to end in every job) or ``staged`` (fine-tuned
    once per fold and seed, its features reused); None without audio."""
    return None if audio is None else audio.get("mode", "frozen")


@dataclass(frozen=True)
class Cell:
    """One combination of components; ``config`` holds their resolved configs."""

    text: str | None
    audio: str | None
    fusion: str
    approach: str
    config: dict[str, Any]
    id: str
    source: str = "grid"
    protocol: str | None = None  # a name from the recipe's ``protocols``; None = ``protocol``
    #: the ablation switches the cell sets (``{"fusion.attention": False}``): settings whose
    #: config field declares ``json_schema_extra={"ablation": <value>}`` and has that value
    ablations: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in ("text", "audio") if getattr(self, m) is not None)

    @property
    def control(self) -> str | None:
        """The learning control this cell is (``permuted_labels``), or None."""
        return self.config.get("control")

    @property
    def label(self) -> str:
        inputs = "+".join(n for n in (self.text, self.audio) if n is not None)
        suffix = f" [{self.control.replace('_', ' ')}]" if self.control else ""
        under = f"@{self.protocol}" if self.protocol else ""
        return f"{inputs}/{self.fusion}/{self.approach}{suffix}{under}"


@dataclass(frozen=True)
class Job:
    """A cell trained on one fold with one seed. ``id`` is stable across machines."""

    cell: Cell
    fold: str
    seed: int
    id: str
    recipe: str  # the recipe's name
    #: the settings every job of the plan shares (dataset, protocol, train), not copied
    shared_config: dict[str, Any] = field(repr=False, compare=False, hash=False)

    def train_config(self) -> dict[str, Any]:
        """The training settings that shape the job's results: the run's, with the cell's
        own on top (:meth:`Plan.train_settings` gives them all, as ``TrainSettings``)."""
        return {**self.shared_config["train"], **(self.cell.config.get("train") or {})}

    def resolved_config(self) -> dict[str, Any]:
        """Everything that defines the job (what ``config.json`` holds)."""
        return {
            "recipe": self.recipe,
            "cell": self.cell.id,
            "cell_label": self.cell.label,
            "ablations": self.cell.ablations,
            "names": {"text": self.cell.text, "audio": self.cell.audio,
                      "fusion": self.cell.fusion, "approach": self.cell.approach,
                      "protocol": self.cell.protocol},
            **self.shared_config,
            **self.cell.config,
            "fold": self.fold,
            "seed": self.seed,
        }


@dataclass
class Plan:
    """A validated recipe expanded into cells and jobs."""

    recipe: Recipe
    source: str
    components: dict[str, dict[str, dict[str, Any]]]
    dataset: dict[str, Any] | None  # None with ``datasets`` (see ``datasets``)
    protocol: dict[str, Any]
    shared_config: dict[str, Any]
    cells: list[Cell]
    folds: list[str]
    jobs: list[Job] = field(default_factory=list)
    #: fold names of each named protocol, qualified ``<name>:<fold>``
    protocol_folds: dict[str, list[str]] = field(default_factory=dict)
    #: the resolved configs of the named protocols
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: one line each about the recipe, printed by validate, plan and run (not errors)
    warnings: list[str] = field(default_factory=list)
    #: the resolved configs of the recipe's ``datasets`` by name (None: one ``dataset``)
    datasets: dict[str, dict[str, Any]] | None = None

    def train_settings(self, cell: Cell) -> TrainSettings:
        """The settings a cell's jobs train with: the recipe's, with the cell's own on top."""
        own = cell.config.get("train")
        if not own:
            return self.recipe.train
        return self.recipe.train.model_copy(update=own)

    def folds_of(self, cell: Cell) -> list[str]:
        """The fold names a cell runs on: its named protocol's, or the recipe protocol's."""
        return self.protocol_folds[cell.protocol] if cell.protocol else self.folds

    def protocol_of(self, cell: Cell) -> dict[str, Any]:
        """The resolved config of the protocol a cell runs under."""
        return self.protocols[cell.protocol] if cell.protocol else self.protocol

    @property
    def all_folds(self) -> list[str]:
        """Every fold name of the plan: the recipe protocol's, then each named protocol's."""
        return [*self.folds, *(f for names in self.protocol_folds.values() for f in names)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Cells per axis value (``-`` = modality absent)."""
        out: dict[str, dict[str, int]] = {}
        for axis in ("text", "audio", "fusion", "approach"):
            tally: dict[str, int] = {}
            for cell in self.cells:
                key = getattr(cell, axis) or "-"
                tally[key] = tally.get(key, 0) + 1
            out[axis] = tally
        if any(cell.protocol for cell in self.cells):
            out["protocol"] = {}
            for cell in self.cells:
                key = cell.protocol or "(protocol)"
                out["protocol"][key] = out["protocol"].get(key, 0) + 1
        out["modalities"] = {}
        for cell in self.cells:
            key = "+".join(cell.modalities)
            out["modalities"][key] = out["modalities"].get(key, 0) + 1
        return out

    def size(self) -> dict[str, int]:
        """What running the plan costs, in passes over the corpus and trainings: audio
        feature extractions (one per featurizer, cached), transcriptions of the corpus's
        audio (one per speech recogniser config, cached), frozen text encoder passes (one per
        encoder, cached), staged text encoder fine-tunings (one per encoder, fold, seed and
        control), jobs fine-tuning an encoder themselves, head jobs, tuning trials, and the
        network trainings all jobs make (one each; with ``tune``, one per trial more; under
        ``dev: inner_folds``, k per selection plus the refit, k at most the configured
        ``inner_folds``)."""
        def key(config: Any) -> str:
            return json.dumps(config, sort_keys=True)

        texts = [(job, job.cell.config["text"]) for job in self.jobs
                 if job.cell.config["text"] is not None]
        audios = [(job, job.cell.config["audio"]) for job in self.jobs
                  if job.cell.config["audio"] is not None]
        trials = self.recipe.tune.trials if self.recipe.tune is not None else 0
        return {
            "feature_extractions": len({key(a) for _, a in audios if audio_mode(a) == "frozen"}),
            "transcriptions": len({key(c.config["text"]["asr"]) for c in self.cells
                                   if transcribed(c)}),
            "frozen_encoder_passes": len({key(t) for _, t in texts if t.get("mode") == "frozen"}),
            "stage_fine_tunings": len(
                {(key(t), j.fold, j.seed, j.cell.control)
                 for j, t in [*texts, *audios] if t.get("mode") == "staged"}),
            "fine_tuning_jobs": sum(t.get("mode") == "finetune" or audio_mode(a) == "finetune"
                                    for t, a in ((j.cell.config["text"] or {},
                                                  j.cell.config["audio"])
                                                 for j in self.jobs)),
            "head_jobs": len(self.jobs),
            "tuning_trials": len(self.jobs) * trials,
            "trainings": sum(self._trainings(job, trials) for job in self.jobs),
        }

    def _trainings(self, job: Job, trials: int) -> int:
        protocol = self.protocol_of(job.cell)
        inner = protocol.get("inner_folds", 0) if protocol.get("dev") == "inner_folds" else 0
        return trials * max(inner, 1) + inner + 1

    def corpus_request(self) -> CorpusRequest:
        """What to read and how to split it (``emoplug.data.loading``)."""
        splits = [*([Split(None, self.protocol, self.folds)] if self.folds else []),
                  *(Split(name, self.protocols[name], folds)
                    for name, folds in self.protocol_folds.items())]
        speech = [c for c in self.cells if c.audio is not None or transcribed(c)]
        gold = [c for c in self.cells if c.text is not None and not transcribed(c)]
        return CorpusRequest(self.dataset, splits, bool(speech), self.cache_dir(),
                             self.source, need_text=bool(gold),
                             datasets=self.datasets, label_map=self.recipe.label_map)

    def data_identity(self) -> Any:
        """What identifies the data every job reads, without its location: the dataset's
        config, or the ``datasets`` configs and ``label_map`` (a key of shared caches)."""
        if self.datasets is None:
            return self.shared_config["dataset"]
        return {key: self.shared_config[key] for key in ("datasets", "label_map")}

    def component_key(self, kind: str, config: dict[str, Any]) -> str:
        """The recipe key of the component whose resolved config is ``config``
        (``text.minilm``); a registered type that no section configures is ``kind.type``."""
        for name, resolved in self.components.get(kind, {}).items():
            if resolved == config:
                return f"{kind}.{name}"
        return f"{kind}.{config['type']}"

    def output_dir(self, override: str | os.PathLike | None = None) -> Path:
        if override is not None:
            return Path(override)
        return Path(self.recipe.output_dir or Path("runs") / self.recipe.name)

    def cache_dir(self) -> Path:
        return Path(self.recipe.cache_dir) if self.recipe.cache_dir else default_cache_dir()


def transcribed(cell: Cell) -> bool:
    """Whether the cell's text comes from a speech recogniser (``text.source: asr``)."""
    return (cell.config.get("text") or {}).get("source", "gold") == "asr"


def stable_hash(payload: Any, length: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# -- reading ----------------------------------------------------------------------------------

def format_loc(loc: Iterable[Any]) -> str:
    """``('grid', 'fusion', 2)`` -> ``grid.fusion[2]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for err in exc.errors():
        where = format_loc([*([prefix] if prefix else []), *err["loc"]])
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key")
        elif err["type"] == "missing":
            problems.append(f"{where}: required key is missing")
        else:
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message} (got {err.get('input')!r})")
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that gives one key twice (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen[key]})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe file with the safe loader; a problem is a one-line ``RecipeError``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = ("; it looks like an override: the RECIPE comes first, then the overrides "
                "(emoplug run r.yaml key=value)" if "=" in Path(source).name else "")
        raise RecipeError(source, [f"file not found{hint}"]) from None
    except IsADirectoryError:
        raise RecipeError(source, ["is a folder; give the recipe's YAML file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(source, [f"cannot read: {exc}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(source, [f"not valid YAML: {where}{problem}"]) from None
    if not isinstance(data, dict):
        raise RecipeError(source, [f"a recipe is a YAML mapping, got {type(data).__name__}"])
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str) -> dict:
    """Apply dotted ``key.path=value`` overrides (values parsed as YAML) to a recipe mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise RecipeError(source, [f"override {item!r}: expected KEY.PATH=VALUE"])
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw
        node: Any = data
        parts = key.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(source, [f"override {item!r}: {format_loc(parts[:depth])} "
                                               f"has no item {part}"])
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if not isinstance(node.get(part), (dict, list)):
                        node[part] = {}
                    node = node[part]
            else:
                raise RecipeError(source, [f"override {item!r}: {'.'.join(parts[:depth])} "
                                           "is not a mapping"])
    return data


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(node: Any, path: list[Any], problems: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; unset variables are problems."""
    if isinstance(node, dict):
        return {k: expand_env(v, [*path, k], problems) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, [*path, i], problems) for i, v in enumerate(node)]
    if isinstance(node, str):
        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is not None:
                    return default
                problems.append(f"{format_loc(path)}: environment variable ${{{name}}} is not "
                                f"set (set it, or override {format_loc(path)}=...)")
                return match.group(0)
            return value
        return _ENV.sub(substitute, node)
    return node


# -- resolving and expanding ------------------------------------------------------------------

class _Resolver:
    """Validates component mappings with their plugins' config models, collecting problems."""

    def __init__(self, recipe: Recipe, registry: Registry):
        self.recipe = recipe
        self.registry = registry
        self.problems: list[str] = []

    def component(self, kind: str, mapping: dict[str, Any], where: str) -> dict[str, Any] | None:
        try:
            return self.registry.validate(kind, mapping)
        except ValidationError as exc:
            self.problems.extend(_pydantic_problems(exc, where))
        except EmoplugError as exc:
            self.problems.append(f"{where}.type: {exc}")
        return None

    def protocol(self, mapping: dict[str, Any], where: str) -> dict[str, Any] | None:
        """A protocol mapping validated by its config model; a ``within`` key (with
        ``datasets``: the one corpus it splits) is checked here and kept, last."""
        settings, corpus = split_protocol(mapping)
        names = list(self.recipe.datasets or {})
        if corpus is not None and corpus not in names:
            self.problems.append(
                f"{where}.{WITHIN_KEY}: '{corpus}' is not a name in `datasets` "
                f"({', '.join(names) or 'none: `within` needs `datasets`'})")
            return None
        config = self.component("protocol", settings, where)
        if config is None or corpus is None:
            return config
        return {**config, WITHIN_KEY: corpus}

    def sections(self) -> dict[str, dict[str, dict[str, Any]]]:
        resolved: dict[str, dict[str, dict[str, Any]]] = {}
        for kind in COMPONENT_SECTIONS:
            resolved[kind] = {}
            for name, mapping in getattr(self.recipe, kind).items():
                mapping = {"type": name, **(mapping or {})}
                config = self.component(kind, mapping, f"{kind}.{name}")
                if config is not None and kind == "text":
                    config = self.transcript_source(config, f"{kind}.{name}")
                if config is not None:
                    resolved[kind][name] = config
        return resolved

    def transcript_source(self, config: dict[str, Any], where: str) -> dict[str, Any] | None:
        """A text encoder config with its speech recogniser (``source: asr``) resolved:
        ``asr`` validated by the recogniser's own config (``type`` defaults to whisper)."""
        if config.get("source", "gold") == "gold":
            return config
        missing = missing_package("jiwer", 'pip install "emoplug[asr]"')
        if missing:
            self.problems.append(f"{where}.source: asr transcripts are scored against the gold "
                                 f"ones by word error rate, which {missing}")
            return None
        asr = self.component("asr", {"type": DEFAULT_RECOGNISER, **(config["asr"] or {})},
                             f"{where}.asr")
        return None if asr is None else {**config, "asr": asr}

    def reference(self, kind: str, name: str, where: str,
                  sections: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
        """A grid/extra entry: a section name, else a registered type with default settings."""
        if name in getattr(self.recipe, kind):
            return sections[kind].get(name)
        if name in self.registry.names(kind):
            return self.component(kind, {"type": name}, where)
        known = sorted(set(getattr(self.recipe, kind)) | set(self.registry.names(kind)))
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        self.problems.append(f"{where}: unknown {kind} '{name}'{hint}; available: "
                             f"{', '.join(known) or 'none'}")
        return None


def _cell_entries(recipe: Recipe) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(source, names, where) for each requested cell, before validation."""
    entries = []
    if recipe.grid is not None:
        grid = recipe.grid
        empty = [axis for axis in ("text", "audio", "fusion", "approach")
                 if not getattr(grid, axis)]
        if empty and not recipe.extra:
            raise RecipeError("", [f"grid.{empty[0]}: empty list, so the grid gives no cells "
                                   "(and there are no extra cells)"])
        for (ti, t), (ai, a), (fi, f), (pi, p) in itertools.product(
                enumerate(grid.text), enumerate(grid.audio), enumerate(grid.fusion),
                enumerate(grid.approach)):
            for oi, protocol in enumerate(grid.protocol or [None]):
                where = {"text": f"grid.text[{ti}]", "audio": f"grid.audio[{ai}]",
                         "fusion": f"grid.fusion[{fi}]", "approach": f"grid.approach[{pi}]",
                         "protocol": f"grid.protocol[{oi}]"}
                entries.append(("grid", {"text": t, "audio": a, "fusion": f, "approach": p,
                                         "protocol": protocol}, where))
    for i, spec in enumerate(recipe.extra):
        where = {axis: f"extra[{i}].{axis}"
                 for axis in (*COMPONENT_SECTIONS, "protocol", "train")}
        entries.append(("extra", spec.model_dump(), where))
    return entries


def build_plan(data: dict[str, Any], source: str = "<recipe>",
               registry: Registry | None = None, folder: Path | None = None,
               overridden: Collection[str] = ()) -> Plan:
    """Validate a recipe mapping and expand it into cells and jobs.

    Relative paths in the dataset's and protocols' settings are resolved against ``folder``
    (the recipe's), those set by an override (keys in ``overridden``) against the current
    directory; job ids keep the paths as written."""
    registry = registry or get_registry()
    env_problems: list[str] = []
    data = expand_env(data, [], env_problems)
    if env_problems:
        raise RecipeError(source, env_problems)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(source, _pydantic_problems(exc)) from None
    if recipe.data_problems():
        raise RecipeError(source, recipe.data_problems())
    resolver = _Resolver(recipe, registry)
    dataset = (resolver.component("dataset", recipe.dataset, "dataset")
               if recipe.dataset is not None else None)
    datasets = {name: resolver.component("dataset", mapping, f"datasets.{name}")
                for name, mapping in (recipe.datasets or {}).items()}
    protocol = resolver.protocol(recipe.protocol, "protocol")
    named_protocols = {name: resolver.protocol(mapping, f"protocols.{name}")
                       for name, mapping in recipe.protocols.items()}
    sections = resolver.sections()
    try:
        entries = _cell_entries(recipe)
    except RecipeError as exc:
        raise RecipeError(source, exc.problems) from None
    if not entries:
        resolver.problems.append("no cells: give a 'grid' or 'extra' cells")

    identity: dict[str, Any] = {
        "dataset": _identity(registry, dataset) if dataset else None,
        "protocol": protocol,
        "train": {k: v for k, v in recipe.train.model_dump(mode="json").items()
                  if k not in NON_RESULT_TRAIN_KEYS},
    }
    if recipe.tune is not None:  # absent otherwise: ids stay as they were
        identity["tune"] = recipe.tune.model_dump(mode="json")
    if recipe.datasets is not None:  # several corpora: the dataset key gives way to these
        del identity["dataset"]
        identity["datasets"] = {name: _identity(registry, config) if config else None
                                for name, config in datasets.items()}
        identity["label_map"] = recipe.label_map
    cells: dict[str, Cell] = {}
    unused_fusions: dict[str, str] = {}  # grid fusion entries no two-modality cell uses
    for source_kind, names, where in entries:
        text, audio = names["text"], names["audio"]
        if text is None and audio is None:
            if source_kind == "extra":
                resolver.problems.append(f"{where['text']}: a cell needs text or audio")
            continue
        fusion = names["fusion"]
        single = (text is None) != (audio is None)
        if single and source_kind == "grid" and \
                (sections["fusion"].get(fusion) or {}).get("type") != "none":
            if fusion in recipe.fusion:
                unused_fusions.setdefault(fusion, where["fusion"])
            elif resolver.reference("fusion", fusion, where["fusion"], sections) is None:
                continue  # an unknown name: reported, even where no cell would use it
            fusion = "none"  # a grid cell missing a modality is a single-modality run
        elif source_kind == "grid":
            unused_fusions[fusion] = ""  # used as written
        config: dict[str, Any] = {}
        for axis, name in (("text", text), ("audio", audio), ("fusion", fusion),
                           ("approach", names["approach"])):
            config[axis] = (None if name is None else
                            resolver.reference(axis, name, where[axis], sections))
        if any(config[a] is None for a, n in (("text", text), ("audio", audio),
                                               ("fusion", fusion),
                                               ("approach", names["approach"])) if n is not None):
            continue
        if config["fusion"]["type"] == "none" and not single:
            resolver.problems.append(f"{where['fusion']}: fusion 'none' takes one modality; "
                                     "this cell has text and audio")
            continue
        if names.get("control", "none") != "none":  # absent otherwise: ids stay as they were
            config["control"] = names["control"]
        if names.get("train"):  # absent otherwise: ids stay as they were
            own = _cell_train(recipe.train, names["train"], where["train"], resolver.problems)
            if own is None:
                continue
            config["train"] = own
        problem = (_optimizer_problem(recipe.train, config, where)
                   or _inner_folds_problem(config.get("protocol") or protocol, config, where))
        if problem:
            resolver.problems.append(problem)
            continue
        under = names.get("protocol")
        if under is not None:  # absent under the recipe's protocol: ids stay as they were
            if under not in recipe.protocols:
                known = ", ".join(sorted(recipe.protocols)) or "none (add a 'protocols' section)"
                resolver.problems.append(f"{where['protocol']}: unknown protocol '{under}'; "
                                         f"available: {known}")
                continue
            if named_protocols[under] is None:
                continue
            config["protocol"] = named_protocols[under]
        cell_id = stable_hash({**identity, **config}, 12)
        if cell_id not in cells:
            cells[cell_id] = Cell(text, audio, fusion, names["approach"], config, cell_id,
                                  source_kind, under, _ablations(registry, config))
    if recipe.tune is not None:
        resolver.problems.extend(_tune_problems(recipe.tune, list(cells.values()), registry))
    if not cells and entries and not resolver.problems:
        resolver.problems.append("grid: the grid gives no cells (every combination lacks both "
                                 "text and audio: null in both grid.text and grid.audio)")
    if resolver.problems:
        raise RecipeError(source, resolver.problems)
    empty = [axis for axis in ("text", "audio", "fusion", "approach")
             if recipe.grid is not None and not getattr(recipe.grid, axis)]
    warnings = [f"grid.{axis}: empty list, so the grid gives no cells; the extra cells run"
                for axis in empty[:1]]
    warnings += [f"{where}: fusion '{name}' is not used: every grid cell it meets has one "
                "modality and runs with fusion 'none' at its defaults (a fusion entry of type "
                "none sets that head)" for name, where in unused_fusions.items() if where]

    def locate(kind: str, config: dict[str, Any], where: str) -> dict[str, Any]:
        return _locate(registry, kind, config, where, folder, overridden)

    if recipe.datasets is None:
        dataset = locate("dataset", dataset, "dataset")
        info = _dataset_info(registry, dataset, source)
    else:
        datasets = {name: locate("dataset", config, f"datasets.{name}")
                    for name, config in datasets.items()}
        info = combined_info({name: _dataset_info(registry, config, source, f"datasets.{name}")
                              for name, config in datasets.items()})
    protocol = locate("protocol", protocol, "protocol")
    named_protocols = {name: locate("protocol", config, f"protocols.{name}")
                       for name, config in named_protocols.items()}
    folds = _fold_names(registry, info, protocol, source, "protocol")
    if all(cell.protocol is not None for cell in cells.values()):
        folds = []  # every cell runs under a named protocol
    used = list(dict.fromkeys(c.protocol for c in cells.values() if c.protocol is not None))
    protocol_folds = {name: [f"{name}:{fold}" for fold in _fold_names(
        registry, info, named_protocols[name], source, f"protocols.{name}")]
        for name in used}  # in the order the grid and extra cells name them
    plan = Plan(recipe, source, sections, dataset, protocol, identity, list(cells.values()),
                folds, protocol_folds=protocol_folds,
                protocols={name: named_protocols[name] for name in used}, warnings=warnings,
                datasets=datasets if recipe.datasets is not None else None)
    plan.jobs = [
        Job(cell, fold, seed, stable_hash({**identity, **cell.config, "fold": fold,
                                           "seed": seed}), recipe.name, identity)
        for cell in plan.cells for fold in plan.folds_of(cell) for seed in recipe.seeds
    ]
    if not plan.jobs:
        raise RecipeError(source, [f"protocol: {protocol['type']} makes no folds of this "
                                   "dataset (its description lists no sessions or speakers); "
                                   "nothing to run"])
    return plan


def _tune_problems(tune: TuneSpec, cells: list[Cell], registry: Registry) -> list[str]:
    """Each searched setting applies to some cell, and its bounds or choices are settings the
    cell's component accepts; staged text encoders (shared by cells) are not tuned."""
    from emoplug.search_space import applies, apply_values, boundary_values, split_key

    problems = []
    for key, dimension in tune.space.items():
        where = f"tune.space.{key}"
        section, path = split_key(key)
        if section == "train" and (len(path) != 1 or path[0] not in CELL_TRAIN_KEYS):
            problems.append(f"{where}: not a training setting a cell may set (one of "
                            f"{', '.join(sorted(CELL_TRAIN_KEYS))})")
            continue
        if section not in ("train", *COMPONENT_SECTIONS) or not path:
            problems.append(f"{where}: a setting is train.<key> or "
                            f"<{'|'.join(COMPONENT_SECTIONS)}>.<key>[.<key>...]")
            continue
        tuned = [cell for cell in cells if applies(key, cell.config)]
        if not tuned:
            problems.append(f"{where}: no cell has a {section} component")
            continue
        if section == "text" and path[0] in ("source", "asr"):
            problems.append(f"{where}: transcripts are made once per speech recogniser and "
                            "shared by cells, so the transcript source cannot be tuned per job")
            continue
        if section == "text" and any(c.config["text"].get("mode") == "staged" for c in tuned):
            problems.append(f"{where}: staged text encoders are fine-tuned once and shared by "
                            "cells, so their settings cannot be tuned per job")
            continue
        if section == "audio" and any(audio_mode(c.config["audio"]) == "staged"
                                      for c in tuned):
            problems.append(f"{where}: staged speech encoders are fine-tuned once and shared "
                            "by cells, so their settings cannot be tuned per job")
            continue
        for value in boundary_values(dimension):
            if section == "train":
                if _cell_train(TrainSettings(), {path[0]: value}, where, problems) is None:
                    break
                continue
            try:
                for cell in tuned:
                    apply_values(registry, cell.config, {key: value}, CELL_TRAIN_KEYS)
            except EmoplugError as exc:
                problems.append(f"{where}: {value!r}: {str(exc).split(': ', 1)[-1]}")
                break
    return problems


def _inner_folds_problem(protocol: dict[str, Any] | None, config: dict[str, Any],
                         where: dict[str, str]) -> str | None:
    """Staged text encoders early-stop on the fold's dev split, which inner folds do not
    have."""
    text = config.get("text")
    if protocol and protocol.get("dev") == "inner_folds" and text is not None \
            and text.get("mode") == "staged":
        return (f"{where['text']}: a staged text encoder is fine-tuned once per fold on its dev "
                "split, and dev: inner_folds has none; use mode frozen or finetune, or "
                "another dev")
    if protocol and protocol.get("dev") == "inner_folds" \
            and audio_mode(config.get("audio")) == "staged":
        return (f"{where['audio']}: a staged speech encoder is fine-tuned once per fold on its "
                "dev split, and dev: inner_folds has none; use mode frozen or finetune, or "
                "another dev")
    return None


def _cell_train(run: TrainSettings, own: dict[str, Any], where: str,
                problems: list[str]) -> dict[str, Any] | None:
    """A cell's own training settings, validated over the run's; None after a problem."""
    before = len(problems)
    for key in own:
        if key not in TrainSettings.model_fields:
            problems.append(f"{where}.{key}: unknown key")
        elif key not in CELL_TRAIN_KEYS:
            problems.append(f"{where}.{key}: a setting of the whole run; set it in `train`")
    if len(problems) > before:
        return None
    try:
        merged = TrainSettings.model_validate({**run.model_dump(), **own})
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, where))
        return None
    return {key: getattr(merged, key) for key in sorted(own)}


def _optimizer_problem(run: TrainSettings, config: dict[str, Any],
                       where: dict[str, str]) -> str | None:
    """Full-batch L-BFGS cannot fine-tune a text encoder: not in a cell, not in a stage."""
    text = config.get("text")
    mode = None if text is None else text.get("mode", "finetune")
    optimizer = (config.get("train") or {}).get("optimizer", run.optimizer)
    if mode == "finetune" and optimizer == "lbfgs":
        return (f"{where['text']}: optimizer lbfgs fits full-batch and cannot fine-tune a text "
                "encoder; use mode frozen or staged, or optimizer adamw for this cell")
    if mode == "staged" and run.optimizer == "lbfgs":
        return (f"{where['text']}: staged text encoders are fine-tuned with the recipe's "
                "train settings, and train.optimizer lbfgs cannot fine-tune; keep adamw there "
                "and give lbfgs to cells of their own (extra[i].train)")
    audio = audio_mode(config.get("audio"))
    if audio == "finetune" and optimizer == "lbfgs":
        return (f"{where['audio']}: optimizer lbfgs fits full-batch and cannot fine-tune a "
                "speech encoder; use mode frozen or staged, or optimizer adamw for this cell")
    if audio == "staged" and run.optimizer == "lbfgs":
        return (f"{where['audio']}: staged speech encoders are fine-tuned with the recipe's "
                "train settings, and train.optimizer lbfgs cannot fine-tune; keep adamw there "
                "and give lbfgs to cells of their own (extra[i].train)")
    return None


def _ablations(registry: Registry, config: dict[str, Any]) -> dict[str, Any]:
    """The ablation switches a cell's component configs set: ``{"axis.key": value}`` for
    each config field whose ``json_schema_extra`` names an ``ablation`` value it has."""
    switched: dict[str, Any] = {}
    for axis in ("text", "audio", "fusion", "approach"):
        settings = config.get(axis)
        if settings is None:
            continue
        fields = registry.get(axis, settings["type"]).config_model.model_fields
        for key, info in fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and "ablation" in extra \
                    and settings.get(key) == extra["ablation"]:
                switched[f"{axis}.{key}"] = extra["ablation"]
    return switched


def _locate(registry: Registry, kind: str, config: dict[str, Any], where: str,
            folder: Path | None, overridden: Collection[str]) -> dict[str, Any]:
    """``config`` with each relative path setting (a ``Path`` field of the component's
    config model) made absolute: against the current directory when an override set it,
    else against ``folder`` (None: left as written)."""
    model = registry.get(kind, config["type"]).config_model
    located = dict(config)
    for name, info in model.model_fields.items():
        value = config.get(name)
        if not isinstance(value, str) or not value or not _is_path(info.annotation):
            continue
        if Path(value).expanduser().is_absolute():
            continue
        base = Path.cwd() if f"{where}.{name}" in overridden else folder
        if base is not None:
            located[name] = str(base / value)
    return located


def _is_path(annotation: Any) -> bool:
    """Whether a field annotation is ``Path`` or ``Path | None``."""
    return annotation is Path or Path in getattr(annotation, "__args__", ())


def _identity(registry: Registry, dataset: dict[str, Any]) -> dict[str, Any]:
    """A dataset config without its location fields (``root``, ...)."""
    spec = registry.get("dataset", dataset["type"])
    drop = set(getattr(spec.factory, "location_fields", ()))
    return {k: v for k, v in dataset.items() if k not in drop}


def _dataset_info(registry: Registry, dataset_config: dict[str, Any], source: str,
                  where: str = "dataset") -> DatasetInfo:
    """What the dataset tells of itself without reading it; its errors under ``where``."""
    try:
        return registry.build("dataset", dataset_config).describe()
    except EmoplugError as exc:
        raise RecipeError(source, [f"{where}{p.removeprefix('dataset')}"
                                   for p in dataset_problems(exc)]) from None


def _fold_names(registry: Registry, info: DatasetInfo, protocol_config: dict[str, Any],
                source: str, where: str) -> list[str]:
    """The folds the protocol will make of the data ``info`` describes (of its one corpus
    alone, when the protocol names one ``within``)."""
    settings, corpus = split_protocol(protocol_config)
    if corpus is not None:
        prefix = namespaced(corpus, "")
        info = DatasetInfo(tuple(s for s in info.sessions if s.startswith(prefix)),
                           tuple(s for s in info.speakers if s.startswith(prefix)), (corpus,))
    try:
        return list(registry.build("protocol", settings).fold_names(info))
    except EmoplugError as exc:
        raise RecipeError(source, [f"{where}: {exc}"]) from None


def load_plan(path: str | os.PathLike, overrides: Sequence[str] = (),
              registry: Registry | None = None) -> Plan:
    """Read, override, validate and expand a recipe file."""
    source = str(path)
    data = read_yaml(path)
    before = {section: set(entries) if isinstance(entries := data.get(section), dict) else set()
              for section in _NAMED_SECTIONS}
    plan = build_plan(apply_overrides(data, overrides, source), source, registry,
                      folder=Path(path).absolute().parent,
                      overridden={item.partition("=")[0] for item in overrides})
    problems = _unused_override_entries(plan, overrides, before)
    if problems:
        raise RecipeError(source, problems)
    return plan


def _unused_override_entries(plan: Plan, overrides: Sequence[str],
                             before: dict[str, set[str]]) -> list[str]:
    """Overrides that created a section entry (``text.bert.pretrained=...`` in a recipe
    without ``text.bert``) that no cell uses: almost always a misspelt or misplaced key."""
    used = {"protocols": {c.protocol for c in plan.cells}}
    for section in COMPONENT_SECTIONS:
        used[section] = {getattr(c, section) for c in plan.cells}
    problems = []
    for item in overrides:
        section, _, rest = item.partition("=")[0].partition(".")
        name = rest.split(".")[0]
        if (section in before and name and name not in before[section]
                and name not in used[section]):
            names = ", ".join(sorted(n for n in used[section] if n)) or "none"
            problems.append(f"override {item!r} creates {section}.{name}, which no cell uses "
                            f"(cells use {section}: {names})")
    return problems


def preflight(plan: Plan, registry: Registry | None = None) -> list[str]:
    """What the plan's components find wrong with their own settings before anything runs
    (:meth:`emoplug.Component.check`): one ``key.setting: problem`` line each; entries
    with the same problem (one uncached checkpoint at two levels) share one line."""
    registry = registry or get_registry()
    entries: dict[str, tuple[str, dict[str, Any]]] = (
        {"dataset": ("dataset", plan.dataset)} if plan.datasets is None else
        {f"datasets.{name}": ("dataset", config) for name, config in plan.datasets.items()})
    entries["protocol"] = ("protocol", split_protocol(plan.protocol)[0])
    for name in plan.protocols:
        entries[f"protocols.{name}"] = ("protocol", split_protocol(plan.protocols[name])[0])
    for cell in plan.cells:
        for kind in COMPONENT_SECTIONS:
            name = getattr(cell, kind)
            if name is not None:
                entries.setdefault(f"{kind}.{name}", (kind, cell.config[kind]))
        if transcribed(cell):
            entries.setdefault(f"text.{cell.text}.asr", ("asr", cell.config["text"]["asr"]))
    places: dict[str, list[str]] = {}  # problem -> where (one line for a shared checkpoint)
    for key, (kind, config) in entries.items():
        for problem in registry.build(kind, config).check():
            located = problem.at(key)
            where = f"{located.key}.{located.setting}" if located.key else located.setting
            places.setdefault(located.message, []).append(where)
    return [f"{', '.join(where)}: {message}" for message, where in places.items()]
