"""Tiny random checkpoints of a family, for tests and offline runs.

A tiny checkpoint is a small randomly initialised model of the family plus a tokenizer of the
family's kind (WordPiece, byte-level BPE or Unigram, with its special tokens and template)
built from the corpus transcripts. It is saved with ``save_pretrained`` into
``work_dir/tiny-<family>-<hash>/`` and then loaded like any other checkpoint directory.

The vocabulary is built by :func:`build_vocabulary`, not by ``train_new_from_iterator``
(whose trainers break ties in hash-map order, so each training gave another vocabulary):
the same texts give byte-identical tokenizer files, and so the same predictions.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emoplug import EmoplugError, SettingError
from emoplug.files import honour_umask_tree
from emoplug_text.families import Family

#: Bump when the way tiny checkpoints are built changes, so old directories are not reused.
TINY_VERSION = "2"


def tiny_checkpoint(family: Family, texts: Sequence[str], work_dir: Path, *, hidden: int,
                    layers: int, vocab: int, max_length: int) -> Path:
    """The directory of the tiny checkpoint for these texts and sizes, built if missing.

    Building is atomic (a temporary directory renamed into place), so concurrent jobs that
    need the same checkpoint either build it or reuse the other's.
    """
    corpus = sorted({t for t in texts if t and t.strip()})
    if not corpus:
        raise SettingError("tiny", "true needs texts to train a tokenizer on")
    max_positions = max(512, max_length + 2)
    key = json.dumps([TINY_VERSION, family.name, hidden, layers, vocab, max_positions, corpus])
    target = work_dir / f"tiny-{family.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (target / "config.json").is_file():
        return target

    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=work_dir))
    try:
        _build(family, corpus, tmp, hidden=hidden, layers=layers, vocab=vocab,
               max_positions=max_positions)
        honour_umask_tree(tmp)
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build(family: Family, corpus: list[str], out: Path, *, hidden: int, layers: int,
           vocab: int, max_positions: int) -> None:
    """Build the tokenizer, create the random model, and save both into ``out``."""
    import safetensors.torch
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel

    tokenizer = getattr(transformers, family.tokenizer_class)(do_lower_case=family.lowercase)
    build_vocabulary(tokenizer.backend_tokenizer, corpus, vocab)
    tokenizer.padding_side = family.padding_side

    heads = hidden // 16
    sizes = {
        "vocab_size": len(tokenizer), "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
    }
    if family.model_type == "xlnet":
        sizes.update(d_head=hidden // heads, d_inner=4 * hidden)
    else:
        sizes.update(intermediate_size=4 * hidden, max_position_embeddings=max_positions)
    config = AutoConfig.for_model(family.model_type, **sizes, **family.tiny_config)
    if hasattr(config, "embedding_size"):  # ALBERT/ELECTRA factorised embeddings
        config.embedding_size = hidden

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModel.from_config(config, **family.model_kwargs)
    tokenizer.save_pretrained(out)
    # written by hand rather than model.save_pretrained, which writes nothing on the
    # non-zero ranks of a distributed launch, where every process builds its own copy
    config.save_pretrained(out)
    safetensors.torch.save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})


def build_vocabulary(backend: Any, corpus: list[str], size: int) -> None:
    """Give the empty model of ``backend`` (a ``tokenizers.Tokenizer`` of the family's kind,
    holding only its special tokens) a vocabulary made from ``corpus``, deterministically.

    The special tokens keep their ids (the post-processor's template refers to them); then
    come every character of the pre-tokenized corpus (all 256 byte symbols for byte-level
    BPE), then whole words, most frequent first (ties alphabetical), up to ``size`` entries:
    WordPiece adds ``##`` continuations of the characters, BPE the merges that build each
    word from its left end, Unigram scores words by their log frequency.
    """
    from tokenizers import Tokenizer
    from tokenizers.pre_tokenizers import ByteLevel

    spec = json.loads(backend.to_str())
    model = spec["model"]
    vocab = model["vocab"]  # Unigram: [[piece, score], ...]; others: {token: id}
    slots = (dict(enumerate(piece for piece, _ in vocab)) if isinstance(vocab, list)
             else {i: token for token, i in vocab.items()})
    slots.update({added["id"]: added["content"] for added in spec["added_tokens"]})
    if sorted(slots) != list(range(len(slots))):
        raise EmoplugError(f"tiny tokenizer: special token ids are not 0..n-1: {slots}")
    words: Counter[str] = Counter()
    for text in corpus:
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
        words.update(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
    ranked = sorted(words, key=lambda w: (-words[w], w))
    tokens = [slots[i] for i in range(len(slots))]
    if model["type"] == "BPE" and "ByteLevel" in json.dumps(spec["pre_tokenizer"]):
        alphabet = sorted(ByteLevel.alphabet())
    else:
        alphabet = sorted({c for w in words for c in w})
    tokens += [c for c in alphabet if c not in tokens]
    if model["type"] == "WordPiece":
        prefix = model["continuing_subword_prefix"]
        tokens += [prefix + c for c in alphabet if c != prefix]
    known = set(tokens)
    merges: list[list[str]] = []
    for word in ranked:
        if len(tokens) >= size:
            break
        if model["type"] == "BPE":
            for end in range(2, len(word) + 1):
                if word[:end] not in known and len(tokens) < size:
                    merges.append([word[:end - 1], word[end - 1]])
                    tokens.append(word[:end])
                    known.add(word[:end])
        elif word not in known:
            tokens.append(word)
            known.add(word)
    if model["type"] == "Unigram":
        total = sum(words.values())
        model["vocab"] = [[t, math.log(words[t] / total) if t in words else (
            -20.0 if t in alphabet else 0.0)] for t in tokens]
    else:
        model["vocab"] = {t: i for i, t in enumerate(tokens)}
    if model["type"] == "BPE":
        model["merges"] = merges
    backend.model = Tokenizer.from_str(json.dumps(spec)).model
