"""Fusion strategies: shapes, masking, every fusion with every approach, late heads, ablations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emoplug import EmoplugError, Encoded, Targets
from emoplug.registry import get_registry

LABELS = ("neutral", "happy", "angry", "sad")
DIMS = {"text": 12, "audio": 6}
FUSIONS = {
    "early": {"type": "early", "hidden": 16},
    "early_projected": {"type": "early", "hidden": 16, "project": 8},
    "late": {"type": "late", "hidden": 16},
    "late_mean": {"type": "late", "hidden": 16, "combine": "mean"},
    "hybrid": {"type": "hybrid", "hidden": 16, "project": 8},
    "attention": {"type": "attention", "hidden": 16, "dim": 8, "heads": 2},
    "attention_no_attention": {"type": "attention", "hidden": 16, "dim": 8, "heads": 2,
                               "attention": False},
    "attention_no_layer_norm": {"type": "attention", "hidden": 16, "dim": 8, "heads": 2,
                                "layer_norm": False},
    "none": {"type": "none", "hidden": 16},
    "none_linear": {"type": "none", "hidden": 0},
    "late_linear": {"type": "late", "hidden": 0},
}
MODALITY_SETS = [("text",), ("audio",), ("text", "audio")]


def build_fusion(key: str, modalities: tuple[str, ...], out_dim: int) -> nn.Module:
    fusion = get_registry().build("fusion", FUSIONS[key])
    return fusion.build({m: DIMS[m] for m in modalities}, out_dim)


def encode(sequence: torch.Tensor, lengths: list[int]) -> Encoded:
    """A stand-in encoder that honours its mask: pooled = mean over the real positions."""
    mask = torch.arange(sequence.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    pooled = torch.stack([sequence[i, :n].mean(dim=0) for i, n in enumerate(lengths)])
    return Encoded(sequence=sequence, mask=mask, pooled=pooled)


def padded_batch(modalities: tuple[str, ...], lengths: dict[str, list[int]],
                 seed: int) -> tuple[dict[str, Encoded], dict[str, list[torch.Tensor]]]:
    """A batch padded with huge garbage values, and each example's real frames."""
    gen = torch.Generator().manual_seed(seed)
    batch, examples = {}, {}
    for m in modalities:
        lens = lengths[m]
        seq = 1e4 * torch.randn(len(lens), max(lens) + 3, DIMS[m], generator=gen)
        real = [torch.randn(n, DIMS[m], generator=gen) for n in lens]
        for i, frames in enumerate(real):
            seq[i, : len(frames)] = frames
        batch[m] = encode(seq, lens)
        examples[m] = real
    return batch, examples


def modality_pairs(fusion_key: str) -> list[tuple[str, ...]]:
    return MODALITY_SETS[:2] if fusion_key.startswith("none") else MODALITY_SETS


@pytest.mark.parametrize("key", list(FUSIONS))
def test_padding_changes_nothing(key):
    torch.manual_seed(0)
    lengths = {"text": [5, 2, 7], "audio": [3, 9, 1]}
    for modalities in modality_pairs(key):
        module = build_fusion(key, modalities, out_dim=4).eval()
        batch, examples = padded_batch(modalities, lengths, seed=1)
        with torch.no_grad():
            padded = module(batch)
            alone = torch.cat([
                module({m: encode(examples[m][i][None], [len(examples[m][i])])
                        for m in modalities})
                for i in range(3)
            ])
        assert padded.shape == (3, 4)
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


class StandInEncoder(nn.Module):
    """A trainable linear encoder from raw features to ``Encoded``."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)

    def forward(self, features: torch.Tensor, lengths: list[int]) -> Encoded:
        return encode(self.proj(features), lengths)


def toy_targets(n: int, seed: int) -> Targets:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(LABELS), (n,), generator=gen)
    labels[0] = -1
    avd = 1 + 4 * torch.rand(n, 3, generator=gen)
    avd[1] = float("nan")
    return Targets(labels=labels, avd=avd)


@pytest.mark.parametrize("approach_name", ["direct", "two_stage", "joint"])
@pytest.mark.parametrize("key", list(FUSIONS))
def test_every_fusion_with_every_approach_trains(key, approach_name):
    torch.manual_seed(0)
    registry = get_registry()
    n = 6
    targets = toy_targets(n, seed=2)
    lengths = {"text": [4, 2, 5, 1, 3, 5], "audio": [7, 3, 2, 6, 1, 4]}
    for modalities in modality_pairs(key):
        approach = registry.build("approach", {"type": approach_name})
        out_dim = approach.prepare(LABELS, (1.0, 5.0), targets)
        encoders = {m: StandInEncoder(3, DIMS[m]) for m in modalities}
        fusion = build_fusion(key, modalities, out_dim)
        raw = {m: torch.randn(n, max(lengths[m]), 3) for m in modalities}
        outputs = fusion({m: encoders[m](raw[m], lengths[m]) for m in modalities})
        assert outputs.shape == (n, out_dim)
        loss = approach.loss(outputs, targets)
        assert torch.isfinite(loss)
        loss.backward()
        for m in modalities:
            assert encoders[m].proj.weight.grad.abs().sum() > 0, (key, m)
        trainable = [p for p in fusion.parameters() if p.requires_grad]
        assert trainable and all(p.grad is not None for p in trainable), key
        approach.fit(outputs.detach(), targets)
        decoded = approach.decode(outputs.detach(), targets)
        assert decoded.labels.shape == (n,)
        assert decoded.probs.shape == (n, len(LABELS))
        assert (decoded.avd is not None) == approach.predicts_avd


def test_none_fusion_rejects_two_modalities():
    fusion = get_registry().build("fusion", {"type": "none"})
    with pytest.raises(EmoplugError, match="one modality"):
        fusion.build(DIMS, 4)


def test_fusion_rejects_missing_or_unknown_modalities():
    fusion = get_registry().build("fusion", {"type": "early"})
    with pytest.raises(EmoplugError, match="no modality"):
        fusion.build({}, 4)
    with pytest.raises(EmoplugError, match="video"):
        fusion.build({"video": 3}, 4)
    module = fusion.build(DIMS, 4)
    batch, _ = padded_batch(("text",), {"text": [2]}, seed=0)
    with pytest.raises(EmoplugError, match="was given"):
        module(batch)


def test_attention_heads_must_divide_dim():
    fusion = get_registry().build("fusion", {"type": "attention", "dim": 10, "heads": 4})
    with pytest.raises(EmoplugError, match="not divisible"):
        fusion.build(DIMS, 4)
    assert [p.setting for p in fusion.check()] == ["heads"]  # validate finds it first


def test_early_projection_sets_joint_width():
    module = build_fusion("early_projected", ("text", "audio"), 4)
    assert module.joint.out_dim == 16
    assert build_fusion("early", ("text", "audio"), 4).joint.out_dim == 18


def kinds(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules()}


def test_attention_ablations_remove_their_layers():
    full = kinds(build_fusion("attention", ("text", "audio"), 4))
    assert {nn.MultiheadAttention, nn.LayerNorm} <= full
    no_attention = kinds(build_fusion("attention_no_attention", ("text", "audio"), 4))
    assert nn.MultiheadAttention not in no_attention and nn.LayerNorm in no_attention
    no_norm = kinds(build_fusion("attention_no_layer_norm", ("text", "audio"), 4))
    assert nn.LayerNorm not in no_norm and nn.MultiheadAttention in no_norm


def test_attention_is_cross_modal():
    """With attention, the text stream reads the audio frames."""
    torch.manual_seed(0)
    lengths = {"text": [4, 3], "audio": [5, 2]}
    batch, _ = padded_batch(("text", "audio"), lengths, seed=3)
    other_audio, _ = padded_batch(("audio",), lengths, seed=4)
    module = build_fusion("attention", ("text", "audio"), 4).eval()
    text_stream = module.project["text"](batch["text"].sequence)
    mask = batch["audio"].mask
    with torch.no_grad():
        before, after = (module.blocks["text"](text_stream, module.project["audio"](b.sequence),
                                               mask)
                         for b in (batch["audio"], other_audio["audio"]))
    assert not torch.allclose(before, after)


def test_attention_survives_an_empty_sequence():
    module = build_fusion("attention", ("text", "audio"), 4).eval()
    batch, _ = padded_batch(("text", "audio"), {"text": [3, 2], "audio": [4, 2]}, seed=0)
    batch["audio"].mask[1] = False
    with torch.no_grad():
        assert torch.isfinite(module(batch)).all()


def test_short_context_is_padded_to_the_fast_softmax_length(monkeypatch):
    """On the CPU a context under 16 positions is padded (masked) for attention: the keys the
    attention sees grow to 16, and the fused output is what the unpadded context gives."""
    import emoplug_fusion.modules as modules

    module = build_fusion("attention", ("text", "audio"), 4).eval()
    batch, _ = padded_batch(("text", "audio"), {"text": [3, 2], "audio": [9, 4]}, seed=1)
    batch["audio"].mask[1] = False  # a row with no real context: it attends to position 0
    key_lengths: list[int] = []
    for block in module.blocks.values():
        block.attention.register_forward_pre_hook(
            lambda _module, args: key_lengths.append(args[1].shape[1]))
    with torch.no_grad():
        padded = module(batch)
        assert key_lengths == [modules.MIN_CPU_KEYS] * 2
        monkeypatch.setattr(modules, "MIN_CPU_KEYS", 0)
        unpadded = module(batch)
    assert key_lengths[2:] == [12, 6]  # audio 9 + 3, text 3 + 3 (padded_batch adds 3)
    torch.testing.assert_close(padded, unpadded, rtol=1e-5, atol=1e-6)


def test_attention_over_an_empty_context_is_finite():
    """A context of no positions at all is padded to one masked position, not an error."""
    module = build_fusion("attention", ("text", "audio"), 4).eval()
    batch, _ = padded_batch(("text", "audio"), {"text": [3, 2], "audio": [4, 2]}, seed=0)
    audio = batch["audio"]
    batch["audio"] = Encoded(sequence=audio.sequence[:, :0], mask=audio.mask[:, :0],
                             pooled=audio.pooled)
    with torch.no_grad():
        assert torch.isfinite(module(batch)).all()


def test_late_fusion_combines_modality_outputs():
    batch, _ = padded_batch(("text", "audio"), {"text": [3, 2], "audio": [4, 2]}, seed=0)
    for key in ("late", "late_mean"):
        module = build_fusion(key, ("text", "audio"), 4).eval()
        with torch.no_grad():
            out = module(batch)
        per = module.last_modality_outputs
        assert set(per) == {"text", "audio"} and per["text"].shape == (2, 4)
        torch.testing.assert_close(out, (per["text"] + per["audio"]) / 2)  # equal weights at 0
    hybrid = build_fusion("hybrid", ("text", "audio"), 4)
    hybrid(batch)
    assert set(hybrid.last_modality_outputs) == {"joint", "text", "audio"}


def test_late_fusion_heads_learn_a_toy_problem():
    """Each modality carries the class; both heads and the combined output learn it."""
    torch.manual_seed(0)
    n, classes = 64, 4
    labels = torch.arange(n) % classes
    centres = {m: 3 * torch.randn(classes, DIMS[m]) for m in DIMS}
    batch = {m: Encoded(sequence=torch.zeros(n, 1, d), mask=torch.ones(n, 1, dtype=torch.bool),
                        pooled=centres[m][labels] + torch.randn(n, d))
             for m, d in DIMS.items()}
    module = build_fusion("late", ("text", "audio"), classes)
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    ce = nn.CrossEntropyLoss()

    def losses() -> dict[str, float]:
        out = module(batch)
        per = module.last_modality_outputs
        return {"fused": ce(out, labels), **{m: ce(per[m], labels) for m in per}}

    first = {k: v.item() for k, v in losses().items()}
    for _ in range(60):
        optimiser.zero_grad()
        loss = losses()["fused"]
        loss.backward()
        for m in DIMS:
            head_grads = [p.grad for p in module.heads[m].parameters()]
            assert all(g is not None and g.abs().sum() > 0 for g in head_grads)
        assert module.logit_weights.grad is not None
        optimiser.step()
    last = {k: v.item() for k, v in losses().items()}
    for key in first:
        assert last[key] < 0.3 * first[key], (key, first[key], last[key])


@pytest.mark.parametrize("key", list(FUSIONS))
def test_every_fusion_trains_under_bf16_autocast_with_padding(key):
    """``mixed_precision: bf16`` runs fusions under autocast: masking must fit bf16."""
    torch.manual_seed(0)
    for modalities in modality_pairs(key):
        fusion = build_fusion(key, modalities, 4)
        batch, _ = padded_batch(modalities, {"text": [4, 1, 5], "audio": [2, 6, 1]}, seed=3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = fusion(batch)
        assert torch.isfinite(outputs.float()).all(), (key, modalities)
        outputs.float().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in fusion.parameters()
                   if p.grad is not None), (key, modalities)


def test_hidden_zero_makes_a_linear_head():
    module = build_fusion("none_linear", ("audio",), 4).eval()
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == DIMS["audio"]
    batch, _ = padded_batch(("audio",), {"audio": [3, 5]}, seed=0)
    torch.testing.assert_close(module(batch), linears[0](batch["audio"].pooled))
