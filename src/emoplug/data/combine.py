"""Several corpora as one: the ``datasets:`` section of a recipe.

Each corpus keeps its own name (the recipe's key for it). Utterance ids, speakers, sessions and
dialogs are namespaced ``<corpus>/<value>``, so two corpora cannot collide and no speaker of
one is a speaker of another by construction; ``Utterance.meta["corpus"]`` says where each
utterance came from. Labels go through the recipe's ``label_map`` onto one shared label set:
a corpus with a map must map every label it keeps (to a shared label, or to ``null`` to leave
its utterances out, counted as excluded); a corpus without one keeps its labels as they are.
The shared label set is every target in the order first met (corpora in recipe order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emoplug.types import Corpus, DatasetInfo, Utterance

#: the ``Utterance.meta`` key naming the corpus (the ``datasets:`` key) an utterance is from
CORPUS_KEY = "corpus"
#: the protocol key naming the one corpus of a recipe's ``datasets`` the protocol splits
WITHIN_KEY = "within"
#: joins a corpus name and a value of it: ``north/Ses01F_impro01_F000``
SEPARATOR = "/"


def namespaced(corpus: str, value: str) -> str:
    """``value`` of ``corpus`` made distinct from every other corpus's values."""
    return f"{corpus}{SEPARATOR}{value}"


def combined_info(infos: Mapping[str, DatasetInfo]) -> DatasetInfo:
    """What planning knows of several datasets: their sessions and speakers namespaced, and
    the corpus names."""
    return DatasetInfo(
        sessions=tuple(namespaced(n, s) for n, info in infos.items() for s in info.sessions),
        speakers=tuple(namespaced(n, s) for n, info in infos.items() for s in info.speakers),
        corpora=tuple(infos))


def label_map_problems(name: str, labels: tuple[str, ...],
                       mapping: Mapping[str, str | None] | None) -> list[str]:
    """Why ``mapping`` (``label_map.<name>``) cannot map corpus ``name`` with ``labels``: each
    kept label it leaves unmapped, one line each."""
    if mapping is None:
        return []
    return [f"label_map.{name}: label '{label}' of '{name}' is not mapped (map it to a shared "
            "label, or to null to leave its utterances out)"
            for label in labels if label not in mapping]


def shared_labels(corpora: Mapping[str, Corpus],
                  label_map: Mapping[str, Mapping[str, str | None]]) -> tuple[str, ...]:
    """The shared label set: each corpus's labels through its map, in the order first met."""
    targets: dict[str, None] = {}
    for name, corpus in corpora.items():
        mapping = label_map.get(name)
        for label in corpus.labels:
            target = label if mapping is None else mapping[label]
            if target is not None:
                targets.setdefault(target)
    return tuple(targets)


def combine_corpora(corpora: Mapping[str, Corpus],
                    label_map: Mapping[str, Mapping[str, str | None]]) -> Corpus:
    """One corpus holding every corpus's utterances, namespaced and relabelled (the maps are
    checked first, :func:`label_map_problems`); what each corpus skipped, excluded and warned
    about is kept under its name.

    Valence/arousal/dominance of a corpus on another scale than the first corpus's are
    rescaled linearly onto it (a warning in ``meta["warnings"]`` says so)."""
    labels = shared_labels(corpora, label_map)
    names = list(corpora)
    first = corpora[names[0]]
    combined = Corpus("+".join(names), labels, [], avd_scale=first.avd_scale,
                      meta={"corpora": names, "excluded": {}, "warnings": [], "cut_short": []})
    warnings = combined.meta["warnings"]
    for name, corpus in corpora.items():
        mapping = label_map.get(name)
        rescale = _rescaler(corpus.avd_scale, first.avd_scale)
        if rescale is not None:
            warnings.append(f"datasets.{name}: valence/arousal/dominance on the scale "
                            f"{list(corpus.avd_scale)} are rescaled linearly onto "
                            f"{list(first.avd_scale)} (the first corpus's)")
        unused = [key for key in mapping or {} if key not in corpus.labels]
        if unused:  # one map shared by corpora may name labels some do not keep
            warnings.append(f"label_map.{name}: {', '.join(repr(k) for k in unused)} are not "
                            f"labels of '{name}' (its labels: {', '.join(corpus.labels)}): "
                            "not used")
        dropped = 0
        for utt in corpus.utterances:
            label = utt.label if mapping is None or utt.label is None else mapping[utt.label]
            if utt.label is not None and label is None:
                dropped += 1
                continue
            combined.utterances.append(_moved(name, utt, label, rescale))
        if dropped:
            combined.meta["excluded"][f"{name}: dropped by label_map"] = dropped
        for reason, count in corpus.meta.get("excluded", {}).items():
            combined.meta["excluded"][f"{name}: {reason}"] = count
        for reason, count in corpus.skipped.items():
            key = f"{name}: {reason}"
            combined.skipped[key] = count
            combined.skipped_examples[key] = list(corpus.skipped_examples.get(reason, []))
        warnings += [f"{name}: {w}" for w in corpus.meta.get("warnings", [])]
        combined.meta["cut_short"] += [namespaced(name, c)
                                       for c in corpus.meta.get("cut_short", [])]
        combined.meta["synthetic"] = combined.meta.get("synthetic", True) and bool(
            corpus.meta.get("synthetic"))
    return combined


def _moved(name: str, utt: Utterance, label: str | None, rescale: Any) -> Utterance:
    """``utt`` of corpus ``name`` with namespaced id, speaker, session and dialog."""
    meta = dict(utt.meta)
    if meta.get("dialog") is not None:
        meta["dialog"] = namespaced(name, str(meta["dialog"]))
    meta[CORPUS_KEY] = name
    meta["original_id"] = utt.id
    avd = utt.avd if utt.avd is None or rescale is None else tuple(rescale(v) for v in utt.avd)
    return Utterance(id=namespaced(name, utt.id), speaker=namespaced(name, utt.speaker),
                     session=namespaced(name, utt.session), text=utt.text, audio=utt.audio,
                     label=label, avd=avd, meta=meta)


def _rescaler(source: tuple[float, float], target: tuple[float, float]) -> Any:
    """The linear map from scale ``source`` onto ``target``; None when they are the same."""
    if tuple(source) == tuple(target):
        return None
    (a, b), (c, d) = source, target
    return lambda v: c + (v - a) * (d - c) / (b - a)


def split_protocol(config: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A resolved protocol config without its ``within`` key (the one corpus of a recipe's
    ``datasets:`` it splits), and that corpus (None: all of them)."""
    protocol = dict(config)
    return protocol, protocol.pop(WITHIN_KEY, None)


def corpus_of(corpus: Corpus, name: str) -> Corpus:
    """The part of a combined corpus that came from corpus ``name`` (its label set kept)."""
    return Corpus(name, corpus.labels,
                  [u for u in corpus.utterances if u.meta.get(CORPUS_KEY) == name],
                  avd_scale=corpus.avd_scale, meta={"corpora": [name]})
