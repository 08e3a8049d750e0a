"""Evaluation protocols: ``loso``, ``loso_speaker``, ``kfold`` and ``random``.

Every protocol filters the corpus (``subset``), chooses each fold's test set in its own way,
trains on the rest, and carves the dev set out of the training part (``dev: random`` = a
seeded, label-stratified ``dev_fraction``; ``dev: speaker`` = one held-out training speaker;
``dev: session`` = one whole training session, rotating with the fold; ``dev: inner_folds`` =
no fixed dev set: settings and the early-stopping epoch are chosen on ``inner_folds``
speaker-grouped folds of the training part, then the model is refitted on all of it).
Utterances are sorted by id first, so folds depend only on the corpus and the seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from emoplug import (
    ComponentConfig,
    Corpus,
    DatasetInfo,
    EmoplugError,
    Fold,
    Protocol,
    Utterance,
    stratified_sample,
)

if TYPE_CHECKING:
    import numpy as np


class SplitConfig(ComponentConfig):
    subset: Literal["all", "improvised", "scripted"] = Field(
        "all", description="dialog type kept (Utterance.meta['improvised'])")
    dev: Literal["random", "speaker", "session", "inner_folds"] = Field(
        "random", description="random: a fraction of the training utterances (shares "
                              "speakers with train); speaker: one held-out training speaker; "
                              "session: one whole training session, rotating with the fold "
                              "(disjoint from train in speakers and dialogs); inner_folds: "
                              "nested selection on speaker-grouped folds of the training "
                              "part, then one refit on all of it")
    inner_folds: int = Field(3, ge=2, description="inner_folds: how many speaker-grouped "
                             "folds the training part is split into")
    dev_fraction: float = Field(0.2, gt=0, lt=1, description="share of training in dev (random)")
    seed: int = 0


class KFoldConfig(SplitConfig):
    k: int = Field(5, ge=2, description="number of folds")


class SplitProtocol(Protocol):
    """Shared machinery: subset filter, train = not test, dev carved out of train."""

    Config: ClassVar[type[SplitConfig]] = SplitConfig
    speaker_dependent: ClassVar[bool] = False

    def test_sets(self, utterances: list[Utterance]) -> list[tuple[str, list[str]]]:
        """``(fold name, test ids)`` per fold, from the filtered, id-sorted utterances."""
        raise NotImplementedError

    def keep(self, utterance: Utterance) -> bool:
        subset = self.config.subset
        if subset == "all":
            return True
        improvised = utterance.meta.get("improvised")
        if improvised is None:
            return False
        return bool(improvised) == (subset == "improvised")

    def folds(self, corpus: Corpus) -> list[Fold]:
        import numpy as np

        utterances = sorted((u for u in corpus.utterances if self.keep(u)), key=lambda u: u.id)
        if not utterances:
            raise EmoplugError(f"protocol {self.name}: no utterance of corpus '{corpus.name}' "
                               f"is left by subset '{self.config.subset}'")
        folds = []
        for index, (name, test) in enumerate(self.test_sets(utterances)):
            test_set = set(test)
            train = [u for u in utterances if u.id not in test_set]
            if not train:
                raise EmoplugError(f"protocol {self.name}: fold {name} leaves no training data")
            rng = np.random.default_rng([self.config.seed, index])
            dev, meta = self.carve_dev(train, rng, index)
            dev_set = set(dev)
            folds.append(Fold(
                name=name,
                train=tuple(u.id for u in train if u.id not in dev_set),
                dev=tuple(sorted(dev_set)),
                test=tuple(sorted(test_set)),
                meta={"protocol": self.name, "subset": self.config.subset,
                      "speaker_dependent": self.speaker_dependent, "dev": self.config.dev,
                      "seed": self.config.seed, **meta}))
        return folds

    def carve_dev(self, train: list[Utterance], rng: np.random.Generator, index: int
                  ) -> tuple[list[str], dict[str, str]]:
        """The dev ids taken from ``train`` (of fold number ``index``) and what to record
        about them in Fold.meta."""
        if self.config.dev == "inner_folds":
            speakers = len({u.speaker for u in train})
            if speakers < 2:
                raise EmoplugError(f"protocol {self.name}: dev: inner_folds needs at least two "
                                   f"training speakers, found {speakers}")
            return [], {"inner_folds": min(self.config.inner_folds, speakers)}
        if self.config.dev == "session":
            sessions = sorted({u.session for u in train})
            if len(sessions) < 2:
                raise EmoplugError(f"protocol {self.name}: dev: session needs at least two "
                                   f"training sessions, found {len(sessions)}")
            # under LOSO fold i tests session i, so this picks session i + 1 (wrapping round)
            session = sessions[index % len(sessions)]
            return [u.id for u in train if u.session == session], {"dev_session": session}
        if self.config.dev == "speaker":
            speakers = sorted({u.speaker for u in train})
            if len(speakers) < 2:
                raise EmoplugError(f"protocol {self.name}: dev: speaker needs at least two "
                                   "training speakers")
            speaker = speakers[rng.integers(len(speakers))]
            return [u.id for u in train if u.speaker == speaker], {"dev_speaker": speaker}
        return stratified_sample([u.id for u in train], [u.label for u in train],
                                 self.config.dev_fraction, rng), {}


class LosoProtocol(SplitProtocol):
    """Leave one session out: one fold per session, named after it."""

    name: ClassVar[str] = "loso"

    def fold_names(self, info: DatasetInfo) -> list[str]:
        return sorted(info.sessions)

    def test_sets(self, utterances: list[Utterance]) -> list[tuple[str, list[str]]]:
        sessions = sorted({u.session for u in utterances})
        if len(sessions) < 2:
            raise EmoplugError(f"protocol loso needs at least two sessions, found {sessions}")
        return [(s, [u.id for u in utterances if u.session == s]) for s in sessions]


class LosoSpeakerProtocol(SplitProtocol):
    """Leave one speaker out: one fold per speaker, named after it."""

    name: ClassVar[str] = "loso_speaker"

    def fold_names(self, info: DatasetInfo) -> list[str]:
        return sorted(info.speakers)

    def test_sets(self, utterances: list[Utterance]) -> list[tuple[str, list[str]]]:
        speakers = sorted({u.speaker for u in utterances})
        if len(speakers) < 2:
            raise EmoplugError(f"protocol loso_speaker needs at least two speakers, "
                               f"found {speakers}")
        return [(s, [u.id for u in utterances if u.speaker == s]) for s in speakers]


class KFoldProtocol(SplitProtocol):
    """Speaker-grouped, label-stratified k folds (scikit-learn StratifiedGroupKFold)."""

    name: ClassVar[str] = "kfold"
    Config: ClassVar[type[KFoldConfig]] = KFoldConfig

    def fold_names(self, info: DatasetInfo) -> list[str]:
        return [f"fold{i}" for i in range(1, self.config.k + 1)]

    def test_sets(self, utterances: list[Utterance]) -> list[tuple[str, list[str]]]:
        from sklearn.model_selection import StratifiedGroupKFold

        speakers = [u.speaker for u in utterances]
        if len(set(speakers)) < self.config.k:
            raise EmoplugError(f"protocol kfold: k={self.config.k} needs at least "
                               f"{self.config.k} speakers, found {len(set(speakers))}")
        splitter = StratifiedGroupKFold(self.config.k, shuffle=True,
                                        random_state=self.config.seed)
        labels = [str(u.label) for u in utterances]
        return [(f"fold{i}", [utterances[j].id for j in test])
                for i, (_, test) in enumerate(splitter.split(utterances, labels, speakers), 1)]


class RandomProtocol(SplitProtocol):
    """Label-stratified random k folds; a speaker appears in train and test (speaker-dependent)."""

    name: ClassVar[str] = "random"
    Config: ClassVar[type[KFoldConfig]] = KFoldConfig
    speaker_dependent: ClassVar[bool] = True

    def fold_names(self, info: DatasetInfo) -> list[str]:
        return [f"fold{i}" for i in range(1, self.config.k + 1)]

    def test_sets(self, utterances: list[Utterance]) -> list[tuple[str, list[str]]]:
        from sklearn.model_selection import StratifiedKFold

        if len(utterances) < self.config.k:
            raise EmoplugError(f"protocol random: k={self.config.k} needs at least "
                               f"{self.config.k} utterances, found {len(utterances)}")
        splitter = StratifiedKFold(self.config.k, shuffle=True, random_state=self.config.seed)
        labels = [str(u.label) for u in utterances]
        return [(f"fold{i}", [utterances[j].id for j in test])
                for i, (_, test) in enumerate(splitter.split(utterances, labels), 1)]
