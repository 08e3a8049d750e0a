"""Tests of the ``gated`` fusion, written with the fixtures of ``emoplug.testing``.

Run with ``python -m pytest examples/emoplug-gated-fusion/tests -q`` after
``pip install -e examples/emoplug-gated-fusion`` (the registration test reads the entry point).
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from emoplug import EmoplugError
from emoplug.registry import get_registry
from emoplug.testing import check_fusion
from emoplug_gated_fusion.fusion import GatedFusion


def small(**settings) -> GatedFusion:
    return GatedFusion(GatedFusion.Config(**{"dim": 8, "hidden": 8, **settings}))


def test_registered_through_its_entry_point():
    spec = get_registry().get("fusion", "gated")
    assert spec.factory is GatedFusion
    assert (spec.plugin, spec.distribution) == ("gated", "emoplug-gated-fusion")


def test_config_defaults_and_validation():
    registry = get_registry()
    assert registry.validate("fusion", {"type": "gated"}) == {
        "type": "gated", "dim": 128, "hidden": 128, "dropout": 0.1}
    with pytest.raises(ValidationError) as err:
        registry.validate("fusion", {"type": "gated", "dim": 0})
    assert err.value.errors()[0]["loc"] == ("dim",)
    with pytest.raises(ValidationError):
        registry.validate("fusion", {"type": "gated", "heads": 4})  # unknown key


def test_keeps_the_fusion_contract():
    check_fusion(small(), dims={"text": 16, "audio": 12}, out_dim=4)


def test_output_is_the_gated_sum_of_tanh_projections(encoded_batch):
    module = small(dropout=0.0).build({"text": 16, "audio": 12}, 3).eval()
    inputs = encoded_batch({"text": 16, "audio": 12}, batch=5)
    out = module(inputs)
    x_audio, x_text = inputs["audio"].pooled, inputs["text"].pooled
    z = torch.sigmoid(module.gate(torch.cat([x_audio, x_text], dim=-1)))
    h = (z * torch.tanh(module.project["audio"](x_audio))
         + (1 - z) * torch.tanh(module.project["text"](x_text)))
    assert torch.allclose(out, module.head(h), atol=1e-6)
    assert module.last_gate.shape == (5, 8)
    assert torch.allclose(module.last_gate, z)


def test_one_modality_degenerates_to_its_projection(tiny_encoded):
    module = small(dropout=0.0).build({"audio": 12}, 3).eval()
    encoded = tiny_encoded(batch=4, length=9, dim=12)
    out = module({"audio": encoded})
    assert module.gate is None
    expected = module.head(torch.tanh(module.project["audio"](encoded.pooled)))
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("dims", [{}, {"video": 8}])
def test_rejects_missing_or_unknown_modalities(dims):
    with pytest.raises(EmoplugError, match="fusion 'gated'"):
        small().build(dims, 4)


def test_trains_end_to_end_on_the_demo_corpus(run_one_cell):
    (result,) = run_one_cell(fusion={"type": "gated", "dim": 16, "hidden": 16})
    assert result["status"] == "done"
    assert result["names"]["fusion"] == "gated"
    assert result["modalities"] == ["text", "audio"]
    assert 0.0 <= result["metrics"]["test"]["ua"] <= 1.0
