"""The ``fold_files`` protocol: folds read from the fold files EmoBox and s3prl publish.

Each fold's test set is its test list; train is the rest of the (``subset``-filtered) corpus,
which the files' train list must match; dev is carved out of train like every protocol's
(:mod:`emoplug_data.protocols`). The files are checked against the corpus first: ids the
corpus lacks, utterances no list of a fold names, ids in both lists, test ids the ``subset``
filter would remove, labels that disagree and labels of utterances the corpus has no label
for are one error line per fold, naming the file and the first ids (an id listed twice in one
file is an error when the file is read). The formats themselves live in the core
(``emoplug.foldfiles``), which also writes emoplug's folds the other way (``emoplug folds
export``).
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from emoplug import Corpus, DatasetInfo, EmoplugError, Fold, Utterance, foldfiles
from emoplug_data.protocols import SplitConfig, SplitProtocol


class FoldFilesConfig(SplitConfig):
    format: Literal["emobox", "s3prl"] = Field(
        description="emobox: data/<corpus>/fold_<k>/*.jsonl; s3prl: meta_data/<fold>/*.json")
    path: Path = Field(description="EmoBox: the data/<corpus> folder; s3prl: the meta_data "
                                   "folder; a relative path is read from the working directory")
    corpus: str | None = Field(
        None, description="EmoBox: the prefix of every key ('iemocap' in "
                          "'iemocap-Ses01F_impro04_F000'); default: the folder's name")


class FoldFilesProtocol(SplitProtocol):
    """Published folds (EmoBox, s3prl), checked against the corpus; dev carved from train."""

    name: ClassVar[str] = "fold_files"
    Config: ClassVar[type[FoldFilesConfig]] = FoldFilesConfig

    def folder(self) -> Path:
        return self.config.path.expanduser()

    def fold_names(self, info: DatasetInfo) -> list[str]:
        return [p.name for p in foldfiles.fold_folders(self.config.format, self.folder())]

    @cached_property
    def files(self) -> foldfiles.FoldFiles:
        return foldfiles.read_fold_files(self.config.format, self.folder(), self.config.corpus)

    def folds(self, corpus: Corpus) -> list[Fold]:
        by_id = corpus.by_id()
        kept = {u.id for u in corpus.utterances if self.keep(u)}
        for fold in self.files.folds:
            problems = fold_problems(fold, by_id, kept, self.files.label_map,
                                     self.config.subset)
            if problems:
                raise EmoplugError(f"fold_files: {fold.name}: {'; '.join(problems)}")
        return [dataclasses.replace(f, meta={**f.meta, "fold_files": self.config.format,
                                             "speaker_dependent": shares_speakers(f, by_id)})
                for f in super().folds(corpus)]

    def test_sets(self, utterances: list[Utterance]) -> list[tuple[str, list[str]]]:
        kept = {u.id for u in utterances}
        sets = []
        for fold in self.files.folds:
            test = [i for i in fold.test if i in kept]
            if not test:
                raise EmoplugError(f"fold_files: {fold.name}: subset '{self.config.subset}' "
                                   "leaves no test utterance")
            sets.append((fold.name, test))
        return sets


def fold_problems(fold: foldfiles.FoldList, by_id: dict[str, Utterance], kept: set[str],
                  label_map: dict[str, str], subset: str = "all") -> list[str]:
    """What is wrong with one fold's lists against the corpus (``kept``: the ids the subset
    filter keeps), each as a short phrase with a count, the file and the first few ids."""
    codes = {**fold.train, **fold.test}
    unknown = sorted(codes.keys() - by_id.keys())
    missing = sorted(kept - codes.keys())
    both = sorted(fold.train.keys() & fold.test.keys())
    removed = sorted((fold.test.keys() & by_id.keys()) - kept)
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} ids in the fold files are not in the corpus "
                        f"({few(unknown)})")
    if missing:
        problems.append(f"{len(missing)} corpus utterances are in no list of {fold.name} "
                        f"({few(missing)})")
    if both:
        problems.append(f"{len(both)} ids are in both its train and test lists ({few(both)})")
    if removed:
        problems.append(f"subset '{subset}' removes {len(removed)} test ids of "
                        f"{_file(fold, 'test')} ({few(removed)}): the scores would not be on "
                        "the published test set (write fold files of that subset with "
                        "`emoplug folds export`, or use subset: all)")
    for part, listed in (("train", fold.train), ("test", fold.test)):
        known = sorted(listed.keys() & by_id.keys())
        unlabelled = [i for i in known if listed[i] is not None and by_id[i].label is None]
        disagree = [f"{i}: '{listed[i]}' vs '{by_id[i].label}'" for i in known
                    if by_id[i].label is not None
                    and not label_agrees(listed[i], by_id[i], label_map)]
        if disagree:
            problems.append(f"{len(disagree)} ids have another label in the fold files than in "
                            f"the corpus ({_file(fold, part)}: {few(disagree)})")
        if unlabelled:
            problems.append(f"{len(unlabelled)} ids have a label in the fold files but none in "
                            f"the corpus, which cannot confirm it ({_file(fold, part)}: "
                            f"{few(unlabelled)})")
    return problems


def _file(fold: foldfiles.FoldList, part: str) -> str:
    """The file a fold's ``part`` list was read from (its name when unknown)."""
    return str(fold.files.get(part, f"{fold.name} {part} list"))


def label_agrees(code: str | None, utterance: Utterance, label_map: dict[str, str]) -> bool:
    """Whether a file's label code names the utterance's label: mapped through the label map,
    it is the label or its three-letter code (case-insensitive), or it is the corpus's own
    code (IEMOCAP's ``meta.code``: ``exc`` is happy under four_class). True when the file
    gives no label; False when it gives one and the corpus has none to confirm it."""
    if code is None:
        return True
    if utterance.label is None:
        return False
    named, label = label_map.get(code, code).casefold(), utterance.label.casefold()
    return named in (label, label[:3]) or code == utterance.meta.get("code")


def shares_speakers(fold: Fold, by_id: dict[str, Utterance]) -> bool:
    """Whether a test speaker also speaks in the fold's train or dev part."""
    seen = {by_id[i].speaker for i in (*fold.train, *fold.dev)}
    return any(by_id[i].speaker in seen for i in fold.test)


few = foldfiles.first_ids
