"""Reading a plan's corpus and splitting it into folds, each fold audited for leakage.

The corpus and its folds are checked before anything trains: a corpus with no usable
utterance, a missing audio file, a single class or a repeated id, and a fold with an empty
training or test part are errors (:class:`emoplug.errors.RecipeError`, one line each), so
``emoplug validate`` and ``emoplug run`` refuse them with exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoplug.data.audit import audit_fold, speaker_leak_warning
from emoplug.data.combine import (
    combine_corpora,
    corpus_of,
    label_map_problems,
    split_protocol,
)
from emoplug.errors import EmoplugError, RecipeError, dataset_problems
from emoplug.registry import Registry, get_registry
from emoplug.types import MISSING_AUDIO, Corpus, Fold

#: examples an error message shows
EXAMPLES = 3


@dataclass(frozen=True)
class Split:
    """One protocol to split the corpus with: ``name`` None for the recipe's ``protocol``,
    else a name from ``protocols`` (its folds are called ``<name>:<fold>``); ``folds``: the
    fold names the plan announced."""

    name: str | None
    config: dict[str, Any]
    folds: list[str]


@dataclass(frozen=True)
class CorpusRequest:
    """What a plan asks of the data layer: a dataset, the protocols to split it with, and
    whether audio is read (``emoplug.recipe.Plan.corpus_request`` builds it); ``source``
    names the recipe in errors. A recipe with ``datasets:`` gives ``datasets`` (name ->
    config) and its ``label_map`` instead of ``dataset`` (``emoplug.data.combine``)."""

    dataset: dict[str, Any] | None
    splits: list[Split]
    need_audio: bool
    cache_dir: Path
    source: str
    need_text: bool = False
    datasets: dict[str, dict[str, Any]] | None = None
    label_map: dict[str, dict[str, str | None]] = dataclasses.field(default_factory=dict)


def load_corpus_and_folds(request: CorpusRequest, registry: Registry | None = None,
                          warn: bool = True
                          ) -> tuple[Corpus, list[Fold]]:
    """Read the requested corpus and split it with each protocol of ``request.splits``
    (a named protocol's folds are called ``<name>:<fold>``); fold names must match what the
    plan announced. Each fold's ``meta["audit"]`` holds its leakage audit
    (``emoplug.data.audit``). With ``warn``, skipped items are summarised in one line and a
    protocol that puts test speakers in train says so in one line. Several ``datasets`` are
    read one by one and combined (:func:`emoplug.data.combine.combine_corpora`); a protocol
    with a ``within`` key splits that corpus alone.

    Raises :class:`RecipeError` (one line per problem) for data that cannot be studied."""
    registry = registry or get_registry()
    if request.datasets is None:
        corpus = _read_dataset(request, registry, request.dataset, "dataset")
    else:
        corpus = _read_datasets(request, registry)
    problems = corpus_problems(corpus, request.need_text)
    if request.datasets is not None:  # the combined corpus's lines name the whole section
        problems = [f"datasets{p.removeprefix('dataset')}" for p in problems]
    if problems:
        raise RecipeError(request.source, problems)
    if warn:
        for line in [*([skip_line(corpus)] if corpus.skipped else []),
                     *(f"emoplug: warning: {w}" for w in data_warnings(corpus))]:
            print(line, file=sys.stderr)
    by_id = corpus.by_id()
    folds: list[Fold] = []
    for name, config, expected in ((s.name, s.config, s.folds) for s in request.splits):
        protocol_config, only = split_protocol(config)
        protocol = registry.build("protocol", protocol_config)
        where = f"protocols.{name}" if name else "protocol"
        part = corpus if only is None else corpus_of(corpus, only)
        absent = [label for label in part.labels if not any(u.label == label
                                                            for u in part.utterances)]
        if only is not None and absent:
            raise RecipeError(request.source, [
                f"{where}.within: label(s) {', '.join(repr(a) for a in absent)} of the shared "
                f"label set never occur in '{only}', so a model trained within it never "
                f"learns them; map them onto its labels (label_map) or study '{only}' apart"])
        try:
            made = [dataclasses.replace(f, name=f"{name}:{f.name}" if name else f.name,
                                        meta={**f.meta, "audit": audit_fold(f, by_id)})
                    for f in protocol.folds(part)]
        except EmoplugError as exc:
            raise RecipeError(request.source, [f"{where}: {line}"
                                            for line in str(exc).splitlines()]) from None
        warning = speaker_leak_warning(name or config["type"], made)
        if warn and warning:
            print(warning, file=sys.stderr)
        problems = fold_problems(made, expected, where, config["type"])
        if problems:
            raise RecipeError(request.source, problems)
        folds += made
    return corpus, folds


def _read_dataset(request: CorpusRequest, registry: Registry, config: dict[str, Any],
                  where: str) -> Corpus:
    """One dataset read; its errors as recipe problems under ``where`` (``datasets.north``)."""
    try:
        return registry.build("dataset", config).load(need_audio=request.need_audio,
                                                      cache_dir=request.cache_dir)
    except EmoplugError as exc:
        raise RecipeError(request.source, [f"{where}{p.removeprefix('dataset')}"
                                           for p in dataset_problems(exc)]) from None


def _read_datasets(request: CorpusRequest, registry: Registry) -> Corpus:
    """Every dataset of ``request.datasets`` read, checked on its own (a corpus without any
    transcript is refused when a cell reads text; its label map against its labels), then
    combined into one corpus."""
    corpora, problems = {}, []
    for name, config in (request.datasets or {}).items():
        where = f"datasets.{name}"
        corpus = corpora[name] = _read_dataset(request, registry, config, where)
        problems += [f"{where}{p.removeprefix('dataset')}"
                     for p in corpus_problems(corpus, request.need_text)]
        problems += label_map_problems(name, corpus.labels, request.label_map.get(name))
    if problems:
        raise RecipeError(request.source, problems)
    return combine_corpora(corpora, request.label_map)


def corpus_problems(corpus: Corpus, need_text: bool = False) -> list[str]:
    """Why ``corpus`` cannot be studied, one line each (none when it can): among others a
    label of the label set that no utterance has (the class would be dropped), values of
    valence/arousal/dominance mostly outside ``avd_scale``, and no transcript at all when a
    cell reads text (``need_text``)."""
    if not corpus.utterances:
        total = sum(corpus.skipped.values())
        if not total:
            return [f"dataset: '{corpus.name}' holds no utterance"]
        return [f"dataset: no usable utterance in '{corpus.name}': all {total} items were "
                f"skipped ({_reasons(corpus, examples=True)})"]
    problems = []
    missing = corpus.skipped.get(MISSING_AUDIO, 0)
    if missing:
        problems.append(f"dataset: {missing} audio file(s) that '{corpus.name}' names do "
                        "not exist (e.g. "
                        f"{', '.join(corpus.skipped_examples[MISSING_AUDIO][:EXAMPLES])}); "
                        "fix the paths or remove their entries")
    repeated = {i: n for i, n in Counter(u.id for u in corpus.utterances).items() if n > 1}
    if repeated:
        shown = ", ".join(f"'{i}' ({n} times)" for i, n in list(repeated.items())[:EXAMPLES])
        problems.append(f"dataset: {len(repeated)} utterance id(s) of '{corpus.name}' occur "
                        f"more than once ({shown}); ids must be unique")
    labels = Counter(u.label for u in corpus.utterances if u.label is not None)
    if len(labels) == 1:
        (label, n), = labels.items()
        problems.append(f"dataset: every labelled utterance of '{corpus.name}' ({n}) has the "
                        f"label '{label}'; classes need at least two labels")
    absent = [label for label in corpus.labels if not labels[label]]
    if labels and absent:
        problems.append(f"dataset.labels: {', '.join(repr(a) for a in absent)} of the label set "
                        f"never occur(s) in '{corpus.name}' (its labels: "
                        f"{', '.join(sorted(labels))}); a class with no utterance cannot be "
                        "learnt: fix the label set (or the merge that should map onto it)")
    outside, total = _avd_outside(corpus)
    if total and outside * 2 > total:
        low, high = corpus.avd_scale
        problems.append(f"dataset.avd_scale: {outside} of {total} valence/arousal/dominance "
                        f"values of '{corpus.name}' lie far outside [{low:g}, {high:g}]; set "
                        "avd_scale to the scale the values use")
    if need_text and not any(u.text for u in corpus.utterances):
        problems.append(f"dataset: a cell of the recipe reads text, but no utterance of "
                        f"'{corpus.name}' has a transcript (a manifest needs a text column: "
                        "dataset.columns.text names it)")
    return problems


#: a class with fewer utterances than this is warned about
RARE_CLASS = 5


def data_warnings(corpus: Corpus) -> list[str]:
    """One line for each thing about usable data that is probably a mistake: labels that
    differ only in case or spaces, classes with very few utterances, valence/arousal/
    dominance values outside ``avd_scale``, WAVs cut off mid-data, and what the dataset
    noted (``corpus.meta["warnings"]``)."""
    warnings = list(corpus.meta.get("warnings", []))
    labels = Counter(u.label for u in corpus.utterances if u.label is not None)
    spellings: dict[str, list[str]] = {}
    for label in sorted(labels):
        spellings.setdefault("".join(label.split()).casefold(), []).append(label)
    for group in (g for g in spellings.values() if len(g) > 1):
        warnings.append(f"'{corpus.name}' has labels that differ only in case or spaces "
                        f"({', '.join(repr(g) for g in group)}): each is a class of its own; "
                        "fix the data or set dataset.labels")
    rare = {label: n for label, n in labels.items() if n < RARE_CLASS}
    if rare and len(labels) > 1:
        warnings.append(f"'{corpus.name}' has classes with fewer than {RARE_CLASS} utterances ("
                        f"{', '.join(f'{k}: {n}' for k, n in sorted(rare.items()))}): a typo, "
                        "or too few to learn and score")
    outside, total = _avd_outside(corpus)
    if outside:
        low, high = corpus.avd_scale
        warnings.append(f"{outside} of {total} valence/arousal/dominance values of "
                        f"'{corpus.name}' lie far outside avd_scale [{low:g}, {high:g}]")
    cut = corpus.meta.get("cut_short", [])
    if cut:
        warnings.append(f"{len(cut)} WAV file(s) of '{corpus.name}' are cut off mid-data "
                        f"(e.g. {', '.join(cut[:EXAMPLES])}): each is read as the shorter "
                        "clip it holds")
    return warnings


#: how far (a share of the scale's range) a value may lie outside ``avd_scale`` unnoticed:
#: IEMOCAP's averaged annotations reach 5.5 on its [1, 5] scale
AVD_MARGIN = 0.25


def _avd_outside(corpus: Corpus) -> tuple[int, int]:
    """(values outside ``avd_scale`` by more than :data:`AVD_MARGIN` of its range, values
    given) over every utterance's AVD."""
    low, high = corpus.avd_scale
    margin = (high - low) * AVD_MARGIN
    values = [v for u in corpus.utterances if u.avd is not None for v in u.avd
              if not math.isnan(v)]
    return sum(not low - margin <= v <= high + margin for v in values), len(values)


def fold_problems(folds: list[Fold], expected: list[str], where: str, kind: str) -> list[str]:
    """Folds the plan announced but the protocol did not make, and folds without training
    or test utterances, one line each."""
    names = [f.name for f in folds]
    problems = []
    empty = [name for name in expected if name not in names]
    if empty:
        problems.append(f"{where}: {kind} fold(s) {', '.join(empty)} hold no utterance of "
                        "the corpus (the plan expected them from the dataset's description)")
    unexpected = [name for name in names if name not in expected]
    if unexpected:
        problems.append(f"{where}: {kind} made fold(s) {', '.join(unexpected)} that the plan "
                        f"did not expect ({', '.join(expected) or 'none'})")
    for fold in folds:
        for part in ("train", "test"):
            if not getattr(fold, part):
                problems.append(f"{where}: fold {fold.name} has an empty {part} set")
    return problems


def data_record(corpus: Corpus) -> dict[str, Any]:
    """What ``plan.json`` and each ``result.json`` record of the data: utterances kept, the
    items skipped and excluded, by reason, and ``synthetic: true`` for generated data (the
    ``demo`` corpus: its numbers show the machinery, not emotion recognition)."""
    return {"utterances": len(corpus.utterances),
            "skipped": dict(sorted(corpus.skipped.items())),
            "excluded": dict(sorted(corpus.meta.get("excluded", {}).items())),
            **({"synthetic": True} if corpus.meta.get("synthetic") else {})}


def data_line(corpus: Corpus, folds: list[Fold]) -> str:
    """What ``emoplug validate`` says of valid data: utterances, labels, audio files found,
    folds, and the items skipped and excluded by reason."""
    labels = Counter(u.label for u in corpus.utterances if u.label is not None)
    audio = sum(u.audio is not None for u in corpus.utterances)
    excluded = corpus.meta.get("excluded", {})
    corpora = corpus.meta.get("corpora", [])
    parts = [f"data: {len(corpus.utterances)} utterances of '{corpus.name}'",
             *([f"{len(corpora)} corpora (ids, speakers and sessions namespaced per corpus: "
                "no speaker is shared across corpora by construction)"] if corpora else []),
             f"{len(labels)} labels" if labels else "no labels",
             *([f"{audio} audio files found"] if audio else []), f"{len(folds)} folds",
             f"skipped {sum(corpus.skipped.values())}"
             + (f" ({_reasons(corpus)})" if corpus.skipped else ""),
             f"excluded {sum(excluded.values())}" + (
                 f" ({'; '.join(f'{r}: {n}' for r, n in sorted(excluded.items()))})"
                 if excluded else "")]
    return "  " + ", ".join(parts)


def skip_line(corpus: Corpus) -> str:
    """The one warning line a run prints about skipped items."""
    total = sum(corpus.skipped.values())
    return (f"emoplug: warning: {corpus.name}: skipped {total} of "
            f"{total + len(corpus.utterances)} items ({_reasons(corpus)}); "
            "'emoplug data summary' lists examples")


def _reasons(corpus: Corpus, examples: bool = False) -> str:
    """``reason: count`` for each skip reason, with a few examples each on request."""
    parts = []
    for reason, n in sorted(corpus.skipped.items()):
        shown = corpus.skipped_examples.get(reason, [])[:EXAMPLES] if examples else []
        parts.append(f"{reason}: {n}" + (f", e.g. {', '.join(shown)}" if shown else ""))
    return "; ".join(parts)
