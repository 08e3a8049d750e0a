"""The six transformer text encoders, built tiny (random weights, tokenizer trained here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from emoplug.registry import get_registry
from emoplug_text.families import FAMILIES
from emoplug_text.module import pool

NAMES = ["bert", "roberta", "xlnet", "albert", "electra", "deberta"]
CORPUS = [
    "I am so happy today, this is wonderful!",
    "Why would you do that to me? I trusted you.",
    "That's fine, whatever you want.",
    "Oh no, I lost my keys again and I'm late.",
    "Hello there, how are you doing?",
    "I can't believe you said that, it's outrageous!",
    "We won the game, let's celebrate tonight.",
    "Leave me alone, I don't want to talk.",
] * 3
LONG = "Hello there, I am so happy today, this is wonderful and we won the game!"
SHORT = "Why?"


def build(name: str, work_dir: Path, **settings):
    component = get_registry().build("text", {"type": name, "tiny": True, **settings})
    torch.manual_seed(0)
    return component.build(texts=CORPUS, work_dir=work_dir)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("text-encoders")


@pytest.fixture(scope="module")
def encoders(work_dir) -> dict:
    return {name: build(name, work_dir).eval() for name in NAMES}


def test_all_six_registered_with_family_defaults():
    registry = get_registry()
    assert set(NAMES) <= set(registry.names("text"))
    expected = {"bert": "bert-base-uncased", "roberta": "roberta-base",
                "xlnet": "xlnet-base-cased", "albert": "albert-base-v2",
                "electra": "google/electra-base-discriminator",
                "deberta": "microsoft/deberta-v3-base"}
    for name, checkpoint in expected.items():
        config = registry.build("text", {"type": name}).config
        assert config.pretrained == checkpoint
        assert config.pooling == ("last" if name == "xlnet" else "cls")
        assert (config.dropout, config.train_layers, config.tiny) == (0.1, None, False)
        assert (config.tiny_hidden, config.tiny_layers, config.tiny_vocab) == (32, 2, 500)


def test_unknown_setting_is_rejected():
    with pytest.raises(ValidationError, match="pooler"):
        get_registry().build("text", {"type": "bert", "pooler": "cls"})


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_backward(encoders, name):
    encoder = encoders[name]
    tokens = encoder.tokenize([LONG, SHORT, "That's fine."])
    encoder.train()
    try:
        out = encoder(**tokens)
    finally:
        encoder.eval()
    batch, steps = tokens["input_ids"].shape
    assert out.sequence.shape == (batch, steps, encoder.dim) and encoder.dim == 32
    assert out.mask.dtype == torch.bool
    assert torch.equal(out.mask, tokens["attention_mask"].bool())
    assert out.pooled.shape == (batch, 32)
    assert (out.sequence[~out.mask] == 0).all()
    (out.pooled.pow(2).sum() + out.sequence.mean()).backward()
    grads = [p.grad for p in encoder.pretrained_parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    encoder.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", NAMES)
def test_padding_side_and_token_types(encoders, name):
    family = FAMILIES[name]
    tokens = encoders[name].tokenize([LONG, SHORT])
    mask = tokens["attention_mask"]
    padded_at = 0 if family.padding_side == "left" else -1
    assert mask[1, padded_at] == 0 and mask[0].all()
    assert ("token_type_ids" in tokens) == family.token_type_ids
    tokenizer = encoders[name].tokenizer
    summary = tokens["input_ids"][0, -1 if family.cls_position == "last" else 0]
    assert summary == tokenizer.cls_token_id


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pooling", ["cls", "mean", "first", "last"])
def test_pooled_in_padded_batch_equals_alone(encoders, name, pooling):
    encoder = encoders[name]
    family = FAMILIES[name]
    encoder.pooling = family.cls_position if pooling == "cls" else pooling
    try:
        with torch.no_grad():
            batch = encoder(**encoder.tokenize([LONG, SHORT])).pooled
            alone = [encoder(**encoder.tokenize([text])).pooled[0] for text in (LONG, SHORT)]
    finally:
        encoder.pooling = family.cls_position
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch[1], alone[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
def test_pool_reads_positions_from_the_mask(side):
    real = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    mask = real if side == "right" else real.flip(1)
    sequence = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)
    sequence[~mask] = 1e6  # padding must never leak into the result
    first, last = mask.int().argmax(1), 3 - mask.flip(1).int().argmax(1)
    rows = torch.arange(2)
    torch.testing.assert_close(pool(sequence, mask, "first"), sequence[rows, first])
    torch.testing.assert_close(pool(sequence, mask, "last"), sequence[rows, last])
    expected_mean = torch.stack([sequence[i][mask[i]].mean(0) for i in range(2)])
    torch.testing.assert_close(pool(sequence, mask, "mean"), expected_mean)


@pytest.mark.parametrize("name", ["bert", "xlnet"])
def test_dynamic_padding_and_truncation(work_dir, encoders, name):
    encoder = encoders[name]
    lengths = [len(encoder.tokenize([t])["input_ids"][0]) for t in (LONG, SHORT)]
    assert encoder.tokenize([LONG, SHORT])["input_ids"].shape[1] == max(lengths)
    assert encoder.tokenize([SHORT, SHORT])["input_ids"].shape[1] == lengths[1]
    assert lengths[0] > 8
    short = build(name, work_dir, max_length=8)
    tokens = short.tokenize([LONG, SHORT])
    assert tokens["input_ids"].shape[1] == 8
    cls_at = -1 if FAMILIES[name].cls_position == "last" else 0
    assert tokens["input_ids"][0, cls_at] == short.tokenizer.cls_token_id


def test_lowercasing_follows_the_family(encoders):
    def ids(name, text):
        return encoders[name].tokenize([text])["input_ids"].tolist()

    for name in ("bert", "albert", "electra"):
        assert ids(name, "HELLO THERE") == ids(name, "hello there")
    for name in ("roberta", "xlnet", "deberta"):
        assert ids(name, "HELLO THERE") != ids(name, "hello there")


@pytest.mark.parametrize("name", NAMES)
def test_train_layers_freezes_lower_layers(work_dir, name):
    from operator import attrgetter

    def trainable(module):
        return {p.requires_grad for p in module.parameters()}

    layers_path = FAMILIES[name].layers
    top = build(name, work_dir, train_layers=1)
    stack = list(attrgetter(layers_path)(top.transformer))
    assert trainable(stack[-1]) == {True}
    if len(stack) > 1:  # ALBERT shares one layer group across its layers
        assert trainable(stack[0]) == {False}
    embeddings = top.transformer.get_input_embeddings()
    assert trainable(embeddings) == {False}
    assert trainable(build(name, work_dir, train_layers=0).transformer) == {False}
    assert trainable(build(name, work_dir).transformer) == {True}


@pytest.mark.parametrize("name", NAMES)
def test_saved_tiny_directory_loads_as_pretrained(work_dir, encoders, name):
    first = encoders[name]
    (directory,) = work_dir.glob(f"tiny-{name}-*")
    second = get_registry().build("text", {"type": name, "pretrained": str(directory)})
    loaded = second.build(texts=[], work_dir=work_dir).eval()
    assert loaded.tokenizer.padding_side == FAMILIES[name].padding_side
    tokens = first.tokenize([LONG, SHORT])
    assert torch.equal(tokens["input_ids"], loaded.tokenize([LONG, SHORT])["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(first(**tokens).pooled, loaded(**tokens).pooled)


def test_tiny_checkpoint_is_reused_and_keyed_by_texts(work_dir, encoders):
    from emoplug_text.tiny import tiny_checkpoint

    settings = {"hidden": 32, "layers": 2, "vocab": 500, "max_length": 128}
    (directory,) = work_dir.glob("tiny-bert-*")
    stamp = (directory / "config.json").stat().st_mtime_ns
    again = tiny_checkpoint(FAMILIES["bert"], list(reversed(CORPUS)), work_dir, **settings)
    assert again == directory and (directory / "config.json").stat().st_mtime_ns == stamp
    other = tiny_checkpoint(FAMILIES["bert"], CORPUS[:4], work_dir, **settings)
    assert other != directory and (other / "tokenizer.json").is_file()
    assert not list(work_dir.glob(".tiny-*"))  # no temporary directories left behind


def test_tiny_checkpoints_are_byte_identical_across_cold_caches(tmp_path):
    """Two cold caches get the same files, hence the same predictions. Today
    ``train_new_from_iterator`` breaks ties in hash-map order: each training (even in one
    process) gave another vocabulary, and the demo's numbers moved between cold caches."""
    from emoplug_text.tiny import tiny_checkpoint

    caches = [tmp_path / "a", tmp_path / "b"]
    for cache in caches:
        for family in FAMILIES.values():
            tiny_checkpoint(family, CORPUS, cache, hidden=32, layers=1, vocab=300,
                            max_length=32)
    files = [{p.relative_to(c): p.read_bytes() for c_dir in c.glob("tiny-*")
              for p in c_dir.rglob("*") if p.is_file()} for c in caches]
    assert len(files[0]) >= 6 * 3 and files[0] == files[1]

    from transformers import AutoModel, AutoTokenizer

    for name in ("bert", "roberta", "xlnet"):
        outputs = []
        for cache in caches:
            (directory,) = cache.glob(f"tiny-{name}-*")
            tokens = AutoTokenizer.from_pretrained(directory)([LONG, SHORT], padding=True,
                                                             return_tensors="pt")
            with torch.no_grad():
                outputs.append(AutoModel.from_pretrained(directory).eval()(
                    **tokens).last_hidden_state)
        assert torch.equal(*outputs)


def test_tiny_vocabulary_keeps_special_ids_and_covers_the_corpus(tmp_path):
    from transformers import AutoTokenizer

    from emoplug_text.tiny import tiny_checkpoint

    for name in ("bert", "roberta", "albert", "deberta"):
        directory = tiny_checkpoint(FAMILIES[name], CORPUS, tmp_path, hidden=32, layers=1,
                                    vocab=400, max_length=32)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        ids = tokenizer(CORPUS[0])["input_ids"]
        assert tokenizer.unk_token_id not in ids  # every corpus character is in the vocabulary
        assert tokenizer.convert_ids_to_tokens(tokenizer.pad_token_id) == tokenizer.pad_token
        assert tokenizer.decode(ids, skip_special_tokens=True).strip().lower().replace(
            " ", "") == CORPUS[0].lower().replace(" ", "")
