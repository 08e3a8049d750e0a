"""Inputs packed on the training device: padding there equals padding on the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoplug import EmoplugError
from emoplug.train.data import Collator, Example, pad_arrays
from emoplug.train.packed import (
    DeviceInputs,
    PackedSequences,
    device_inputs_enabled,
    pack_text,
)


def arrays(dtype, n: int = 12, dim: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"u{i}": rng.standard_normal((int(rng.integers(1, 30)), dim)).astype(dtype)
            for i in range(n)}


def pack(items: dict[str, np.ndarray]) -> PackedSequences:
    return PackedSequences(list(items), [len(a) for a in items.values()],
                           iter(items.values()), torch.device("cpu"))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_pad_equals_host_padding(dtype):
    items = arrays(dtype)
    packed = pack(items)
    for ids in (["u3", "u0", "u11"], ["u5"], ["u2", "u2", "u7", "u1"]):
        values, mask = packed.pad(ids)
        expected, expected_mask = pad_arrays([items[i].astype(np.float32) for i in ids])
        assert values.dtype == torch.float32 and torch.equal(values, expected)
        assert torch.equal(mask, expected_mask)
    assert packed.flat.dtype == torch.from_numpy(np.zeros(1, dtype)).dtype  # stored as given


def test_first_rows_and_text_batches_equal_the_host_collator():
    rng = np.random.default_rng(1)
    outputs = {f"u{i}": (rng.standard_normal((int(rng.integers(2, 9)), 6)).astype(np.float16),
                         rng.standard_normal(6).astype(np.float16)) for i in range(8)}
    audio = arrays(np.float16, n=8, dim=3, seed=2)
    chosen = (6, 2, 5)
    on_host = Collator(None)([
        Example(f"u{i}", i % 4, (1.0, 2.0, 3.0), text_cached=outputs[f"u{i}"],
                audio=lambda a=audio[f"u{i}"]: a.astype(np.float32)) for i in chosen])

    def unread():
        raise AssertionError("the collator read host features despite packed ones")

    # the same examples with their host inputs unusable: only the packed ones can be read
    blank = (np.zeros((1, 6), np.float16), np.zeros(6, np.float16))
    examples = [Example(f"u{i}", i % 4, (1.0, 2.0, 3.0), text_cached=blank, audio=unread)
                for i in chosen]
    sequence, pooled = pack_text(outputs, torch.device("cpu"))
    on_device = Collator(None, DeviceInputs(pack(audio), sequence, pooled))(examples)
    for got, want in zip([*on_device["text_cached"], *on_device["audio"]],
                         [*on_host["text_cached"], *on_host["audio"]], strict=True):
        assert torch.equal(got, want)
    assert torch.equal(on_device["targets"].labels, on_host["targets"].labels)


def test_packed_text_follows_the_outputs_the_context_keeps():
    """A stage's bank lives as long as ctx.text_outputs holds that stage's dict."""
    from types import SimpleNamespace

    from emoplug.train.context import RunContext

    def outputs(seed):
        rng = np.random.default_rng(seed)
        return {"u0": (rng.standard_normal((3, 4)).astype(np.float16),
                       rng.standard_normal(4).astype(np.float16))}

    cpu = torch.device("cpu")
    ctx = SimpleNamespace(text_outputs={"stage-a": outputs(0)}, _packed_text={})
    a = RunContext.packed_text(ctx, "stage-a", cpu)
    assert RunContext.packed_text(ctx, "stage-a", cpu)[0] is a[0]  # kept
    ctx.text_outputs = {"stage-b": outputs(1)}  # load_stage evicted a for b
    RunContext.packed_text(ctx, "stage-b", cpu)
    assert set(ctx._packed_text) == {"stage-b"}
    ctx.text_outputs = {"stage-a": outputs(2)}  # a loaded again: a new dict, a new bank
    again = RunContext.packed_text(ctx, "stage-a", cpu)
    assert again[0] is not a[0] and set(ctx._packed_text) == {"stage-a"}
    assert torch.equal(again[1].first(["u0"]),
                       torch.from_numpy(ctx.text_outputs["stage-a"]["u0"][1]).float()[None])


def test_bad_arrays_are_refused_with_the_utterance_named():
    with pytest.raises(EmoplugError, match="no arrays"):
        PackedSequences([], [], iter([]), torch.device("cpu"))
    with pytest.raises(EmoplugError, match="u1: torch.float64 width 4 differs"):
        PackedSequences(["u0", "u1"], [2, 2], iter([np.zeros((2, 3)), np.zeros((2, 4))]),
                        torch.device("cpu"))
    with pytest.raises(EmoplugError, match="u1: torch.float16 width 3 differs from the "
                                           "first array's torch.float64"):
        PackedSequences(["u0", "u1"], [2, 2],
                        iter([np.zeros((2, 3)), np.zeros((2, 3), np.float16)]),
                        torch.device("cpu"))
    with pytest.raises(EmoplugError, match="u0: array of shape"):
        PackedSequences(["u0"], [3], iter([np.zeros((2, 3))]), torch.device("cpu"))


def test_covers_needs_every_id_on_the_same_device():
    packed = pack(arrays(np.float32, n=3))
    assert packed.covers(["u0", "u2"], torch.device("cpu"))
    assert not packed.covers(["u0", "u9"], torch.device("cpu"))
    assert not packed.covers(["u0"], torch.device("meta"))


def test_device_inputs_default_to_accelerators_only(monkeypatch):
    monkeypatch.delenv("EMOPLUG_DEVICE_INPUTS", raising=False)
    assert not device_inputs_enabled(torch.device("cpu"))
    assert device_inputs_enabled(torch.device("cuda"))
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "on")
    assert device_inputs_enabled(torch.device("cpu"))
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "off")
    assert not device_inputs_enabled(torch.device("cuda"))
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", " ON ")
    assert device_inputs_enabled(torch.device("cpu"))
    monkeypatch.setenv("EMOPLUG_DEVICE_INPUTS", "Sometimes")
    with pytest.raises(EmoplugError, match="EMOPLUG_DEVICE_INPUTS='Sometimes' is not one"):
        device_inputs_enabled(torch.device("cpu"))


def test_a_feature_store_keeps_one_bank_and_grows_it_for_new_utterances(tmp_path):
    from emoplug.data.cache import FeatureCache
    from emoplug.train.context import FeatureStore, MemoryBudget
    from emoplug.types import Utterance

    items = arrays(np.float16, n=6)

    class Store(FeatureStore):
        def compute(self, utt):
            if utt.id == "bad":
                self.failed[utt.id] = "audio file bad.wav not found"
                return None
            self.frames[utt.id] = len(items[utt.id])
            return items[utt.id]

    def utts(*ids):
        return [Utterance(id=i, speaker="s", session="1", label="neutral") for i in ids]

    store = Store(None, FeatureCache(tmp_path), MemoryBudget(1 << 20))
    cpu = torch.device("cpu")
    first = store.packed(utts("u0", "u1", "u2"), cpu)
    assert store.packed(utts("u2", "u0"), cpu) is first  # covered: no rebuild
    grown = store.packed(utts("u3"), cpu)
    assert grown is not first and set(grown.rows) == {"u0", "u1", "u2", "u3"}
    assert torch.equal(grown.pad(["u1"])[0][0], torch.from_numpy(items["u1"]).float())
    with pytest.raises(EmoplugError, match="features of bad are unavailable: audio file"):
        store.packed(utts("bad"), cpu)


def test_availability_reads_features_beyond_the_budget_only_once(tmp_path, monkeypatch):
    """Every job asks whether each utterance has features; past the memory budget the
    answer must not cost a cache read per job."""
    from emoplug.data.cache import FeatureCache
    from emoplug.train import context
    from emoplug.types import Utterance

    reads = []

    def load(featurizer, utt, cache):
        reads.append(utt.id)
        if utt.id == "bad":
            raise EmoplugError("audio file bad.wav not found")
        return np.ones((4, 2), np.float32)

    monkeypatch.setattr(context, "load_features", load)
    store = context.FeatureStore(None, FeatureCache(tmp_path), context.MemoryBudget(0))
    utts = [Utterance(id=i, speaker="s", session="1", audio=f"{i}.wav") for i in ("a", "bad")]
    for _ in range(3):
        assert [store.available(u) for u in utts] == [True, False]
    assert reads == ["a", "bad"] and not store.held  # nothing fits a zero budget
    assert store.loader(utts[0])().shape == (4, 2) and reads == ["a", "bad", "a"]
