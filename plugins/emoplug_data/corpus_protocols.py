"""Protocols across corpora: ``cross_corpus`` and ``leave_one_corpus_out``.

They split a recipe's ``datasets:`` (several corpora, combined into one corpus whose
utterances name their corpus in ``Utterance.meta["corpus"]``; ids, speakers and sessions are
namespaced per corpus, so no speaker is shared across corpora by construction):

- ``cross_corpus``: train on the ``train`` corpora, test on the ``test`` corpus (one fold,
  named ``A+B->C``);
- ``leave_one_corpus_out``: one fold per corpus, named after it: test on it, train on the
  others.

Dev is drawn from the training corpora only, in whole speakers: from each training corpus
with two or more speakers, seeded-random speakers until about ``dev_fraction`` of its
utterances (at least one speaker, never all). Every label of the shared label set must occur
in each fold's training part and in its test corpus, or the fold is refused (a class that is
never trained, or never tested, makes the scores meaningless).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from emoplug import ComponentConfig, Corpus, DatasetInfo, EmoplugError, Fold, Protocol, Utterance

if TYPE_CHECKING:
    import numpy as np

#: the ``Utterance.meta`` key naming an utterance's corpus (``emoplug.data.combine``)
CORPUS = "corpus"


class CorpusSplitConfig(ComponentConfig):
    dev_fraction: float = Field(0.2, gt=0, lt=1, description="share of each training "
                                "corpus's utterances held out as dev, in whole speakers")
    seed: int = 0


class CrossCorpusConfig(CorpusSplitConfig):
    train: list[str] = Field(min_length=1, description="the corpora trained on (names from "
                             "the recipe's `datasets`)")
    test: str = Field(description="the corpus tested on (a name from `datasets`)")

    @field_validator("train")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("corpora must be distinct")
        return value

    @field_validator("test")
    @classmethod
    def _test_apart(cls, value: str, info: ValidationInfo) -> str:
        if value in info.data.get("train", ()):
            raise ValueError(f"test corpus '{value}' is also a training corpus")
        return value


class CorpusProtocol(Protocol):
    """Shared machinery: which corpora each fold trains and tests on, dev carved out of the
    training corpora by speaker, every shared label checked in train and test."""

    Config: ClassVar[type[CorpusSplitConfig]] = CorpusSplitConfig
    speaker_dependent: ClassVar[bool] = False

    def layout(self, corpora: tuple[str, ...]) -> list[tuple[str, list[str], str]]:
        """``(fold name, training corpora, test corpus)`` per fold."""
        raise NotImplementedError

    def named_corpora(self) -> list[str]:
        """The corpora the settings name (each must be in the recipe's ``datasets``)."""
        return []

    def fold_names(self, info: DatasetInfo) -> list[str]:
        self._check_corpora(info.corpora)
        return [name for name, _, _ in self.layout(info.corpora)]

    def _check_corpora(self, known: tuple[str, ...]) -> None:
        if len(known) < 2:
            raise EmoplugError(f"protocol {self.name} needs a recipe with two or more corpora "
                               "in `datasets:` (found " + (", ".join(known) or "one `dataset`")
                               + ")")
        unknown = [c for c in self.named_corpora() if c not in known]
        if unknown:
            raise EmoplugError(f"protocol {self.name}: corpus '{unknown[0]}' is not in "
                               f"`datasets` ({', '.join(known)})")

    def folds(self, corpus: Corpus) -> list[Fold]:
        import numpy as np

        groups: dict[str, list[Utterance]] = {}
        for utt in sorted(corpus.utterances, key=lambda u: u.id):
            groups.setdefault(str(utt.meta.get(CORPUS)), []).append(utt)
        names = tuple(corpus.meta.get("corpora") or sorted(groups))
        self._check_corpora(names)
        folds = []
        for index, (name, train_names, test_name) in enumerate(self.layout(names)):
            train = [u for n in train_names for u in groups.get(n, [])]
            test = groups.get(test_name, [])
            rng = np.random.default_rng([self.config.seed, index])
            dev = set(self.carve_dev(name, train_names, groups, rng))
            kept = [u for u in train if u.id not in dev]
            self._check_labels(corpus.labels, name, kept, train_names, test, test_name)
            folds.append(Fold(
                name=name, train=tuple(u.id for u in kept), dev=tuple(sorted(dev)),
                test=tuple(u.id for u in test),
                meta={"protocol": self.name, "speaker_dependent": False, "dev": "speakers",
                      "dev_fraction": self.config.dev_fraction, "seed": self.config.seed,
                      "train_corpora": "+".join(train_names), "test_corpus": test_name}))
        return folds

    def carve_dev(self, fold: str, train_names: list[str], groups: dict[str, list[Utterance]],
                  rng: np.random.Generator) -> list[str]:
        """Dev ids: from each training corpus with two or more speakers, shuffled speakers
        until about ``dev_fraction`` of its utterances (at least one, never all)."""
        dev: list[str] = []
        for name in train_names:
            utterances = groups.get(name, [])
            speakers = sorted({u.speaker for u in utterances})
            if len(speakers) < 2:
                continue
            wanted = self.config.dev_fraction * len(utterances)
            chosen: set[str] = set()
            held = 0
            for index in rng.permutation(len(speakers))[:len(speakers) - 1]:
                speaker = speakers[index]
                chosen.add(speaker)
                held += sum(u.speaker == speaker for u in utterances)
                if held >= wanted:
                    break
            dev += [u.id for u in utterances if u.speaker in chosen]
        if not dev:
            raise EmoplugError(f"protocol {self.name}: fold {fold}: no training corpus has two "
                               "or more speakers, so no dev speakers can be held out")
        return dev

    def _check_labels(self, labels: tuple[str, ...], fold: str, train: list[Utterance],
                      train_names: list[str], test: list[Utterance], test_name: str) -> None:
        """Every shared label occurs in the training part and in the test corpus."""
        for part, utterances, where, hint in (
                ("the training part (dev held out) of", train, "+".join(train_names),
                 " or ".join(f"label_map.{n}" for n in train_names)),
                ("test corpus", test, test_name, f"label_map.{test_name}")):
            seen = {u.label for u in utterances}
            missing = [label for label in labels if label not in seen]
            if missing:
                raise EmoplugError(
                    f"fold {fold}: label(s) {', '.join(repr(m) for m in missing)} of the shared "
                    f"label set never occur in {part} '{where}'; a class must be trained and "
                    f"tested: map it onto another label, or drop it with null, in {hint}")


class CrossCorpusProtocol(CorpusProtocol):
    """Train on the ``train`` corpora, test on the ``test`` corpus: one fold."""

    name: ClassVar[str] = "cross_corpus"
    Config: ClassVar[type[CrossCorpusConfig]] = CrossCorpusConfig

    def named_corpora(self) -> list[str]:
        return [*self.config.train, self.config.test]

    def layout(self, corpora: tuple[str, ...]) -> list[tuple[str, list[str], str]]:
        train, test = list(self.config.train), self.config.test
        return [(f"{'+'.join(train)}->{test}", train, test)]


class LeaveOneCorpusOutProtocol(CorpusProtocol):
    """One fold per corpus, named after it: test on it, train on every other corpus."""

    name: ClassVar[str] = "leave_one_corpus_out"

    def layout(self, corpora: tuple[str, ...]) -> list[tuple[str, list[str], str]]:
        return [(test, [c for c in corpora if c != test], test) for test in corpora]
