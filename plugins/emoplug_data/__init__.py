"""Bundled datasets and evaluation protocols.

Datasets: ``iemocap`` (:mod:`emoplug_data.iemocap`), ``emodb``, ``ravdess`` and ``cremad``
(read by their file-name codes, :mod:`emoplug_data.filecodes`), ``msp_podcast``
(:mod:`emoplug_data.msp_podcast`), ``meld`` (:mod:`emoplug_data.meld`), ``emobox`` (EmoBox's
data files, :mod:`emoplug_data.emobox`), ``manifest`` (CSV/JSONL,
:mod:`emoplug_data.manifest`) and ``demo`` (a synthetic corpus generated on first use,
:mod:`emoplug_data.demo`). Protocols: ``loso``, ``loso_speaker``, ``kfold`` and ``random``
(:mod:`emoplug_data.protocols`), ``fold_files`` (EmoBox's and s3prl's published folds,
:mod:`emoplug_data.foldfiles_protocol`), ``official_partitions`` (a corpus's published
train/dev/test partitions, :mod:`emoplug_data.partitions`), and ``cross_corpus`` and
``leave_one_corpus_out`` over a recipe's ``datasets:`` (:mod:`emoplug_data.corpus_protocols`).
"""

from __future__ import annotations

from emoplug import hookimpl


@hookimpl
def emoplug_register_datasets(register):
    from emoplug_data.cremad import CremadDataset
    from emoplug_data.demo import DemoDataset
    from emoplug_data.emobox import EmoboxDataset
    from emoplug_data.emodb import EmodbDataset
    from emoplug_data.iemocap import IemocapDataset
    from emoplug_data.manifest import ManifestDataset
    from emoplug_data.meld import MeldDataset
    from emoplug_data.msp_podcast import MspPodcastDataset
    from emoplug_data.ravdess import RavdessDataset

    for cls in (IemocapDataset, EmodbDataset, RavdessDataset, CremadDataset, MspPodcastDataset,
                MeldDataset, EmoboxDataset, ManifestDataset, DemoDataset):
        register(cls)


@hookimpl
def emoplug_register_protocols(register):
    from emoplug_data.corpus_protocols import CrossCorpusProtocol, LeaveOneCorpusOutProtocol
    from emoplug_data.foldfiles_protocol import FoldFilesProtocol
    from emoplug_data.partitions import OfficialPartitionsProtocol
    from emoplug_data.protocols import (
        KFoldProtocol,
        LosoProtocol,
        LosoSpeakerProtocol,
        RandomProtocol,
    )

    for cls in (LosoProtocol, LosoSpeakerProtocol, KFoldProtocol, RandomProtocol,
                FoldFilesProtocol, OfficialPartitionsProtocol, CrossCorpusProtocol,
                LeaveOneCorpusOutProtocol):
        register(cls)
