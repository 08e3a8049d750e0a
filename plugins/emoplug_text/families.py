"""What differs between the six transformer families, as one table of plain facts.

Everything else (tokenizing, loading, pooling, freezing) is shared code that reads this table.
Light to import: no torch, no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Pooling = Literal["cls", "mean", "first", "last"]


@dataclass(frozen=True)
class Family:
    """Facts about one transformer family.

    ``cls_position`` says where the summary token sits (``first`` for ``[CLS]``/``<s>``,
    ``last`` for XLNet's trailing ``<cls>``), which is what ``pooling: cls`` reads.
    ``layers`` is the attribute path of the model's stack of transformer layers (for
    ``train_layers``). ``model_kwargs`` are model constructor arguments and
    ``config_overrides`` replace config values when loading; ``tiny_config`` adds to the
    config of tiny models.
    """

    name: str
    checkpoint: str
    model_type: str
    tokenizer_class: str
    default_pooling: Pooling
    cls_position: Literal["first", "last"]
    padding_side: Literal["left", "right"]
    lowercase: bool
    token_type_ids: bool
    layers: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    tiny_config: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="bert", checkpoint="bert-base-uncased", model_type="bert",
            tokenizer_class="BertTokenizer", default_pooling="cls", cls_position="first",
            padding_side="right", lowercase=True, token_type_ids=True, layers="encoder.layer",
            model_kwargs={"add_pooling_layer": False},
        ),
        Family(
            name="roberta", checkpoint="roberta-base", model_type="roberta",
            tokenizer_class="RobertaTokenizer", default_pooling="cls", cls_position="first",
            padding_side="right", lowercase=False, token_type_ids=False, layers="encoder.layer",
            model_kwargs={"add_pooling_layer": False}, tiny_config={"type_vocab_size": 1},
        ),
        Family(
            name="xlnet", checkpoint="xlnet-base-cased", model_type="xlnet",
            tokenizer_class="XLNetTokenizer", default_pooling="last", cls_position="last",
            padding_side="left", lowercase=False, token_type_ids=True, layers="layer",
            # Without this, eval-mode forwards return every layer's states as "memory".
            config_overrides={"use_mems_eval": False},
        ),
        Family(
            # ALBERT shares one layer group across all layers: ``train_layers`` counts groups.
            name="albert", checkpoint="albert-base-v2", model_type="albert",
            tokenizer_class="AlbertTokenizer", default_pooling="cls", cls_position="first",
            padding_side="right", lowercase=True, token_type_ids=True,
            layers="encoder.albert_layer_groups", model_kwargs={"add_pooling_layer": False},
        ),
        Family(
            name="electra", checkpoint="google/electra-base-discriminator",
            model_type="electra", tokenizer_class="ElectraTokenizer", default_pooling="cls",
            cls_position="first", padding_side="right", lowercase=True, token_type_ids=True,
            layers="encoder.layer",
        ),
        Family(
            # DeBERTa-v3 checkpoints are model type deberta-v2; they have no token types.
            name="deberta", checkpoint="microsoft/deberta-v3-base", model_type="deberta-v2",
            tokenizer_class="DebertaV2Tokenizer", default_pooling="cls", cls_position="first",
            padding_side="right", lowercase=False, token_type_ids=False, layers="encoder.layer",
            tiny_config={
                "relative_attention": True, "position_buckets": 64, "max_relative_positions": -1,
                "norm_rel_ebd": "layer_norm", "share_att_key": True,
                "pos_att_type": ["p2c", "c2p"], "position_biased_input": False,
                "type_vocab_size": 0,
            },
        ),
    )
}
