"""The six text-encoder components: one shared implementation, parameterised by family.

Light to import: torch and transformers are imported inside ``build``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, create_model

from emoplug import SettingError, TextEncoder, TextEncoderConfig
from emoplug.checkpoints import checkpoint_problem
from emoplug_text.checkpoints import TINY
from emoplug_text.families import FAMILIES, Family, Pooling

if TYPE_CHECKING:
    from emoplug_text.module import TransformerTextModule


class TransformerEncoderConfig(TextEncoderConfig):
    """Settings shared by the transformer text encoders (see docs/text-encoders.md)."""

    pooling: Pooling = Field(
        "cls", description="cls (the family's summary token), mean, first or last real token")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the outputs")
    train_layers: int | None = Field(
        None, ge=0,
        description="fine-tune only the top k transformer layers (embeddings and lower layers "
                    "frozen; 0 freezes the whole transformer); null trains everything")
    tiny: bool = Field(
        False, description="build a small random model + tokenizer trained on the corpus "
                           "(for tests and offline runs); ignores pretrained")
    tiny_hidden: int = Field(32, gt=0, multiple_of=16, description="tiny: hidden size")
    tiny_layers: int = Field(2, gt=0, description="tiny: number of layers")
    tiny_vocab: int = Field(500, ge=50, description="tiny: tokenizer vocabulary size")


class TransformerTextEncoder(TextEncoder):
    """A Hugging Face transformer of one family, loaded with ``AutoModel.from_pretrained``."""

    family: ClassVar[Family]
    Config: ClassVar[type[TransformerEncoderConfig]] = TransformerEncoderConfig
    config: TransformerEncoderConfig

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Give each family its own config model, defaulting to its checkpoint and pooling."""
        super().__init_subclass__(**kwargs)
        cls.Config = create_model(
            f"{cls.__name__}Config", __base__=TransformerEncoderConfig,
            __doc__=f"Settings of the {cls.name} text encoder.",
            pretrained=(str, cls.family.checkpoint),
            pooling=(Pooling, cls.family.default_pooling))

    def check(self) -> list[SettingError]:
        """A ``pretrained`` checkpoint that is not there (unless ``tiny``)."""
        problem = (None if self.config.tiny
                   else checkpoint_problem(self.config.pretrained, TINY))
        return [] if problem is None else [problem]

    def build(self, *, texts: Sequence[str], work_dir: Path) -> TransformerTextModule:
        from emoplug_text.checkpoints import load_checkpoint
        from emoplug_text.module import TransformerTextModule
        from emoplug_text.tiny import tiny_checkpoint

        cfg = self.config
        if cfg.tiny:
            source = str(tiny_checkpoint(
                self.family, texts, Path(work_dir), hidden=cfg.tiny_hidden,
                layers=cfg.tiny_layers, vocab=cfg.tiny_vocab, max_length=cfg.max_length))
        else:
            source = cfg.pretrained
        tokenizer, transformer = load_checkpoint(source, self.family)
        pooling = self.family.cls_position if cfg.pooling == "cls" else cfg.pooling
        return TransformerTextModule(
            transformer, tokenizer, pooling=pooling, max_length=cfg.max_length,
            dropout=cfg.dropout, train_layers=cfg.train_layers, layers=self.family.layers,
            token_type_ids=self.family.token_type_ids)

    def save(self, module: TransformerTextModule, folder: Path) -> None:
        """A Hugging Face checkpoint folder: tokenizer files, ``config.json`` and
        ``model.safetensors`` (``save_pretrained``)."""
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Writing model shards" bar per job
        module.tokenizer.save_pretrained(folder)
        module.transformer.save_pretrained(folder, safe_serialization=True)

    def load(self, folder: Path) -> TransformerTextModule:
        """The encoder of this config read back from the checkpoint folder ``save`` wrote
        (a tiny model's trained tokenizer included)."""
        saved = type(self)(self.config.model_copy(update={"pretrained": str(folder),
                                                          "tiny": False}))
        return saved.build(texts=[], work_dir=folder)


class Bert(TransformerTextEncoder):
    """BERT (default ``bert-base-uncased``)."""

    name = "bert"
    family = FAMILIES["bert"]


class Roberta(TransformerTextEncoder):
    """RoBERTa (default ``roberta-base``)."""

    name = "roberta"
    family = FAMILIES["roberta"]


class XLNet(TransformerTextEncoder):
    """XLNet (default ``xlnet-base-cased``); pads on the left, summarises at the last token."""

    name = "xlnet"
    family = FAMILIES["xlnet"]


class Albert(TransformerTextEncoder):
    """ALBERT (default ``albert-base-v2``)."""

    name = "albert"
    family = FAMILIES["albert"]


class Electra(TransformerTextEncoder):
    """ELECTRA discriminator (default ``google/electra-base-discriminator``)."""

    name = "electra"
    family = FAMILIES["electra"]


class Deberta(TransformerTextEncoder):
    """DeBERTa-v3 (default ``microsoft/deberta-v3-base``, model type deberta-v2)."""

    name = "deberta"
    family = FAMILIES["deberta"]


TEXT_ENCODERS: tuple[type[TransformerTextEncoder], ...] = (
    Bert, Roberta, XLNet, Albert, Electra, Deberta)
