"""The ``official_partitions`` protocol: a corpus's own published train/dev/test partitions.

Corpora such as MSP-Podcast (``Train``, ``Development``, ``Test1``, ``Test2``, ...) and MELD
(``train``, ``dev``, ``test``) publish one split that everyone reports on. A dataset that
has one puts each utterance's partition in ``meta["partition"]`` and describes its
partitions with :class:`PartitionedInfo` (names, and which serve as train, dev and test by
default), so the fold names are known before the corpus is read. Each chosen test partition
is one fold (named after it), trained on the train partitions and early-stopped on the dev
partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from emoplug import ComponentConfig, Corpus, DatasetInfo, EmoplugError, Fold, Protocol

#: the Utterance.meta key that holds an utterance's official partition
PARTITION = "partition"


@dataclass(frozen=True)
class PartitionedInfo(DatasetInfo):
    """A dataset's description with its official partitions: every name in the corpus's
    order, and the ones a study uses by default for train, dev and test."""

    partitions: tuple[str, ...] = ()
    train: tuple[str, ...] = ()
    dev: str = ""
    test: tuple[str, ...] = ()


class OfficialPartitionsConfig(ComponentConfig):
    test: tuple[str, ...] | None = Field(
        None, description="the test partitions, one fold each (e.g. [Test1] or [Test1, "
                          "Test2]); default: the corpus's default test partition")
    train: tuple[str, ...] | None = Field(
        None, description="the partitions trained on; default: the corpus's train partition")
    dev: str | None = Field(
        None, description="the partition early stopping and selection watch; default: the "
                          "corpus's development partition")


class OfficialPartitionsProtocol(Protocol):
    """The corpus's published partitions: one fold per chosen test partition."""

    name: ClassVar[str] = "official_partitions"
    Config: ClassVar[type[OfficialPartitionsConfig]] = OfficialPartitionsConfig

    def plan(self, info: DatasetInfo) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
        """(train partitions, dev partition, test partitions), checked against the names
        the dataset publishes."""
        if not isinstance(info, PartitionedInfo) or not info.partitions:
            raise EmoplugError("official_partitions: this dataset publishes no official "
                               "partitions (msp_podcast and meld do); use another protocol")
        train = self.config.train or info.train
        dev = self.config.dev or info.dev
        test = self.config.test or info.test
        known = ", ".join(info.partitions)
        for key, names in (("train", train), ("dev", (dev,)), ("test", test)):
            unknown = [n for n in names if n not in info.partitions]
            if unknown:
                raise EmoplugError(f"official_partitions.{key}: {', '.join(unknown)} is not a "
                                   f"partition of this corpus ({known})")
        overlap = sorted((set(train) | {dev}) & set(test)) or sorted(set(train) & {dev})
        if overlap:
            raise EmoplugError(f"official_partitions: partition {overlap[0]} is used twice "
                               "(train, dev and test must be different partitions)")
        return tuple(train), dev, tuple(test)

    def fold_names(self, info: DatasetInfo) -> list[str]:
        return list(self.plan(info)[2])

    def folds(self, corpus: Corpus) -> list[Fold]:
        train_parts, dev_part, test_parts = self.plan(corpus_info(corpus))
        by_part: dict[str, list[str]] = {}
        for u in sorted(corpus.utterances, key=lambda u: u.id):
            by_part.setdefault(str(u.meta.get(PARTITION)), []).append(u.id)
        train = tuple(i for p in train_parts for i in by_part.get(p, []))
        dev = tuple(by_part.get(dev_part, []))
        if not train or not dev:
            empty = ", ".join(train_parts) if not train else dev_part
            raise EmoplugError(f"official_partitions: partition {empty} holds no utterance of "
                               f"corpus '{corpus.name}'")
        by_id = corpus.by_id()
        speakers = {by_id[i].speaker for i in (*train, *dev)}
        folds = []
        for part in test_parts:
            test = tuple(by_part.get(part, []))
            folds.append(Fold(
                name=part, train=train, dev=dev, test=test,
                meta={"protocol": self.name, "train_partitions": list(train_parts),
                      "dev_partition": dev_part,
                      "speaker_dependent": any(by_id[i].speaker in speakers for i in test)}))
        return folds


def corpus_info(corpus: Corpus) -> PartitionedInfo:
    """The partition plan a dataset recorded on its corpus (``meta["partitions"]``)."""
    plan = corpus.meta.get("partitions") or {}
    return PartitionedInfo(sessions=(), partitions=tuple(plan.get("names", ())),
                           train=tuple(plan.get("train", ())), dev=plan.get("dev", ""),
                           test=tuple(plan.get("test", ())))


def partition_meta(info: PartitionedInfo) -> dict[str, object]:
    """What a dataset records in ``corpus.meta["partitions"]`` for :func:`corpus_info`."""
    return {"names": list(info.partitions), "train": list(info.train), "dev": info.dev,
            "test": list(info.test)}
