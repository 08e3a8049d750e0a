"""Tiny random checkpoints of a family, for tests and offline runs.

A tiny checkpoint is a small randomly initialised model of the family plus a tokenizer of the
family's kind (WordPiece, byte-level BPE or Unigram, with its special tokens and template)
trained on the corpus transcripts. It is saved with ``save_pretrained`` into
``work_dir/tiny-<family>-<hash>/`` and then loaded like any other checkpoint directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from emoplug import SettingError
from emoplug_text.families import Family

#: Bump when the way tiny checkpoints are built changes, so old directories are not reused.
TINY_VERSION = "1"


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
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build(family: Family, corpus: list[str], out: Path, *, hidden: int, layers: int,
           vocab: int, max_positions: int) -> None:
    """Train the tokenizer, create the random model, and save both into ``out``."""
    import safetensors.torch
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel

    base = getattr(transformers, family.tokenizer_class)(do_lower_case=family.lowercase)
    tokenizer = base.train_new_from_iterator(corpus, vocab_size=vocab)
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
