"""The full grid's units of work at IEMOCAP size, built from the recipe with emoplug's own
components: the distinct head-job kinds (with their job counts), each kind's network, loss
and a collated batch, the six base-size text encoders, and wav2vec2-base.

``gpu.py`` times these steps on a GPU; ``step_work.py`` counts their FLOPs and kernels and
times their host-side work on the CPU. Both use the same steps, so their figures describe the
same thing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

BATCH = 32
TOKENS = 22  # ~20 words' tokens + 2 special tokens
UTTERANCE_S = 4.46  # IEMOCAP's mean utterance length
SAMPLE_RATE = 16000
N_CLASSES = 4
#: IEMOCAP four-class (5,531 utterances), leave-one-session-out, dev = 20% of the training
#: sessions: the mean fold
IEMOCAP = {"utterances": 5531, "test": 1106, "dev": 885, "train": 3540}
TEXT_HIDDEN = 768  # all six base encoders

#: base-size shapes of the six families (random weights, built from configs: no download)
ENCODER_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "bert": ("BertConfig", {}),
    "roberta": ("RobertaConfig", {"vocab_size": 50265, "max_position_embeddings": 514,
                                  "type_vocab_size": 1, "pad_token_id": 1}),
    "xlnet": ("XLNetConfig", {"d_model": 768, "n_layer": 12, "n_head": 12, "d_inner": 3072,
                              "vocab_size": 32000, "use_mems_eval": False}),
    "albert": ("AlbertConfig", {"hidden_size": 768, "num_attention_heads": 12,
                                "intermediate_size": 3072, "embedding_size": 128,
                                "vocab_size": 30000}),
    "electra": ("ElectraConfig", {"embedding_size": 768, "hidden_size": 768,
                                  "num_hidden_layers": 12, "num_attention_heads": 12,
                                  "intermediate_size": 3072, "vocab_size": 30522}),
    "deberta": ("DebertaV2Config", {"hidden_size": 768, "num_hidden_layers": 12,
                                    "num_attention_heads": 12, "intermediate_size": 3072,
                                    "vocab_size": 128100, "relative_attention": True,
                                    "position_buckets": 256, "max_relative_positions": -1,
                                    "pos_att_type": ["p2c", "c2p"], "norm_rel_ebd": "layer_norm",
                                    "share_att_key": True, "position_biased_input": False,
                                    "type_vocab_size": 0}),
}
#: the widths that make a step's arithmetic negligible while keeping its operations
SMALL_WIDTHS = {"hidden_size": 96, "intermediate_size": 192, "d_model": 96, "d_inner": 192,
                "embedding_size": 96, "vocab_size": 1000}  # 12 heads of 8


def load_full_plan(recipe: Path) -> Any:
    """The recipe's plan (its data root never read)."""
    from emoplug.recipe import load_plan

    return load_plan(recipe, ["dataset.root=/any"])


def fold_sizes() -> dict[str, int]:
    return {k: IEMOCAP[k] for k in ("train", "dev", "test")}


def batches(n: int, batch: int = BATCH) -> int:
    return math.ceil(n / batch)


# -- head jobs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadKind:
    """Cells whose head networks have the same shape (text encoders differ only upstream)."""

    text: bool
    audio: str | None
    fusion: str
    approach: str

    @property
    def name(self) -> str:
        inputs = "+".join(m for m in ("text" if self.text else "", self.audio or "") if m)
        return f"{inputs}/{self.fusion}/{self.approach}"


def head_kinds(plan: Any) -> dict[HeadKind, dict[str, Any]]:
    """Every distinct head kind of ``plan``: its job count and one cell's resolved config."""
    kinds: dict[HeadKind, dict[str, Any]] = {}
    for job in plan.jobs:
        cell = job.cell
        kind = HeadKind(cell.text is not None, cell.audio, cell.fusion, cell.approach)
        kinds.setdefault(kind, {"jobs": 0, "config": cell.config})["jobs"] += 1
    return kinds


def audio_shape(registry: Any, audio_config: dict[str, Any]) -> tuple[int, int]:
    """``(frames, dim)`` of one mean-length utterance: computed by the featurizer itself on a
    synthetic waveform; for wav2vec, from ``Wav2Vec2Config()`` (the base model's shape)."""
    import numpy as np

    featurizer = registry.build("audio", audio_config)
    samples = int(UTTERANCE_S * SAMPLE_RATE)
    if audio_config["type"] == "wav2vec":
        from transformers import Wav2Vec2Config

        base = Wav2Vec2Config()
        frames = samples
        for kernel, stride in zip(base.conv_kernel, base.conv_stride, strict=True):
            frames = (frames - kernel) // stride + 1
        layers = {min(layer, base.num_hidden_layers) for layer in audio_config["layers"]}
        return frames // audio_config.get("downsample", 1), len(layers) * base.hidden_size
    rng = np.random.default_rng(0)
    t = np.arange(samples) / SAMPLE_RATE
    wave = (0.3 * np.sin(2 * np.pi * 140 * t * (1 + 0.1 * np.sin(3 * t)))
            + 0.02 * rng.standard_normal(samples)).astype(np.float32)
    frames, dim = featurizer.featurize(wave, SAMPLE_RATE).shape
    return int(frames), int(dim)


def base_wav2vec_config_dir() -> Path:
    """A folder holding wav2vec2-base's ``config.json`` (``Wav2Vec2Config()``; no weights)."""
    from transformers import Wav2Vec2Config

    folder = _common.WORK / "wav2vec2-base-config"
    if not (folder / "config.json").is_file():
        Wav2Vec2Config().save_pretrained(folder)
    return folder


@dataclass
class HeadStep:
    """One head kind at a given size: its model, loss and a loader of collated batches."""

    model: Any
    loss: Callable[..., Any]
    loader: Any  # emoplug.train.data.Loader over synthetic examples
    parameters: int


def build_head(registry: Any, config: dict[str, Any], *, text_dim: int, tokens: int,
               audio: tuple[int, int] | None, batch: int = BATCH, seed: int = 0) -> HeadStep:
    """The head network of a cell as ``run_job`` builds it, on synthetic cached text
    outputs (``[tokens, text_dim]``) and audio features (``audio`` = (frames, dim))."""
    import numpy as np
    import torch

    from emoplug.train.data import Collator, Example, Loader
    from emoplug.train.model import CellModel
    from emoplug.types import Targets

    rng = np.random.default_rng(seed)
    labels = ["neutral", "happy", "angry", "sad"]
    examples = []
    for i in range(batch):
        example = Example(f"u{i}", int(rng.integers(N_CLASSES)),
                          tuple(float(v) for v in rng.uniform(1, 5, 3)))
        if config["text"] is not None:  # stages store their outputs as float16
            example.text_cached = (rng.standard_normal((tokens, text_dim)).astype(np.float16),
                                   rng.standard_normal(text_dim).astype(np.float16))
        if audio is not None:  # in the featurizer's stored dtype
            features = rng.standard_normal(audio).astype(
                np.float16 if config["audio"]["type"] == "wav2vec" else np.float32)
            example.audio, example.frames = (lambda f=features: f), audio[0]
        examples.append(example)
    torch.manual_seed(seed)
    audio_module = None
    if audio is not None:
        audio_config = config["audio"]
        if audio_config["type"] == "wav2vec":  # its layer count is read from the config only
            audio_config = {**audio_config, "pretrained": str(base_wav2vec_config_dir())}
        audio_module = registry.build("audio", audio_config).build_encoder(audio[1])
    approach = registry.build("approach", config["approach"])
    targets = Targets(torch.tensor([e.label for e in examples]),
                      torch.tensor([e.avd for e in examples], dtype=torch.float32))
    out_dim = approach.prepare(labels, (1.0, 5.0), targets)
    dims = {"text": text_dim} if config["text"] is not None else {}
    if audio_module is not None:
        dims["audio"] = audio_module.dim
    fusion = registry.build("fusion", config["fusion"]).build(dims, out_dim)
    model = CellModel(fusion, audio=audio_module)
    loader = Loader(examples, Collator(None), batch, train=True, seed=seed)
    return HeadStep(model, approach.loss, loader, sum(p.numel() for p in model.parameters()))


# -- steps --------------------------------------------------------------------------------

def train_step(model: Any, loss_fn: Callable[..., Any], make_batch: Callable[[], Any],
               device: str, bf16: bool = True) -> Callable[[], None]:
    """One training step as ``emoplug.train.loop.fit`` takes it: batch to the device,
    forward under autocast, backward, clipping, fused AdamW, no host sync."""
    import torch

    from emoplug.train.data import move_to

    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                  fused=device.split(":")[0] in ("cpu", "cuda"))
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        batch = move_to(make_batch(), torch.device(device))
        with autocast:
            loss = loss_fn(model(batch).float(), batch["targets"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def eval_step(model: Any, make_batch: Callable[[], Any], device: str,
              bf16: bool = True) -> Callable[[], None]:
    """One evaluation batch as ``emoplug.train.loop.predict`` runs it."""
    import torch

    from emoplug.train.data import move_to

    model.to(device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        model.eval()
        with torch.no_grad(), autocast:
            model(move_to(make_batch(), torch.device(device))).float()

    return step


def head_batches(head: HeadStep) -> Callable[[], Any]:
    """A function collating one training batch per call on the host (the loader's work with
    ``EMOPLUG_DEVICE_INPUTS=off``, the CPU's default)."""
    indices = list(range(len(head.loader.examples)))
    return lambda: head.loader.batch(indices)


def device_batches(head: HeadStep, device: str, width: int | None = None
                   ) -> tuple[Callable[[], Any], int, int]:
    """A function collating one training batch per call from inputs packed on ``device``
    (the loader's work on a GPU), the host-to-device copies it makes per batch, and the
    bytes of device memory its gathers and casts read and write. ``width`` cuts every
    input's feature width: the same host work, negligible data."""
    import torch

    from emoplug.train.data import Collator
    from emoplug.train.packed import DeviceInputs, PackedSequences, pack_text

    examples = head.loader.examples
    ids = [e.id for e in examples]

    def cut(array: Any) -> Any:
        return array[..., :width] if width else array

    inputs, copies = DeviceInputs(), 0
    if examples[0].audio is not None:
        stored = [cut(e.audio()) for e in examples]
        inputs.audio = PackedSequences(ids, [len(a) for a in stored], stored,
                                       torch.device(device))
        copies += 2  # index and mask
    if examples[0].text_cached is not None:
        inputs.text_sequence, inputs.text_pooled = pack_text(
            {e.id: (cut(e.text_cached[0]), cut(e.text_cached[1])) for e in examples},
            torch.device(device))
        copies += 3  # sequence index and mask, pooled index
    collate = Collator(None, inputs)
    batch = collate(examples)
    gathered = [(inputs.audio, batch.get("audio", (None,))[0]),
                (inputs.text_sequence, batch.get("text_cached", (None,))[0]),
                (inputs.text_pooled, batch.get("text_cached", (None, None, None))[2])]
    hbm_bytes = 0
    for bank, values in gathered:
        if bank is not None:  # the gather reads and writes each value; a cast to float32
            size = bank.flat.element_size()  # reads it again and writes 4 bytes
            hbm_bytes += values.numel() * (2 * size + (size + 4 if size != 4 else 0))
    return (lambda: collate(examples)), copies, hbm_bytes


# -- text encoders ------------------------------------------------------------------------

def build_encoder(family: str, small: bool = False, seed: int = 0) -> Any:
    """The staged fine-tuning's network as ``run_text_stage`` builds it: the family's
    base-shaped transformer (or the same with ``SMALL_WIDTHS``) in emoplug's text module,
    plus the text-only head (4 classes + 3 AVD)."""
    import torch
    import transformers

    from emoplug.train.model import CellModel
    from emoplug.train.text_stage import PooledHead
    from emoplug_text.families import FAMILIES
    from emoplug_text.module import TransformerTextModule

    facts = FAMILIES[family]
    class_name, kwargs = ENCODER_CONFIGS[family]
    config_class = getattr(transformers, class_name)
    if small:
        defaults = config_class()
        kwargs = {**kwargs, **{k: v for k, v in SMALL_WIDTHS.items() if hasattr(defaults, k)}}
    config = config_class(**kwargs)
    torch.manual_seed(seed)
    transformer = transformers.AutoModel.from_config(config, **facts.model_kwargs)
    module = TransformerTextModule(
        transformer, None, pooling=facts.default_pooling, max_length=128, dropout=0.1,
        train_layers=None, layers=facts.layers, token_type_ids=facts.token_type_ids)
    return CellModel(PooledHead(module.dim, N_CLASSES + 3), text=module)


def encoder_batches(model: Any, batch: int = BATCH, tokens: int = TOKENS) -> Callable[[], Any]:
    """A function returning a batch of random token ids (the tokenizer is timed apart)."""
    import torch

    from emoplug.types import Targets

    vocab = model.text.transformer.config.vocab_size
    generator = torch.Generator().manual_seed(0)

    def make() -> dict[str, Any]:
        ids = torch.randint(5, vocab, (batch, tokens), generator=generator)
        return {"text_tokens": {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                "targets": Targets(torch.randint(0, N_CLASSES, (batch,), generator=generator),
                                   torch.rand(batch, 3, generator=generator))}

    return make


def staged_loss() -> Callable[..., Any]:
    """The staged fine-tuning's multi-task loss (categories + standardised AVD)."""
    import torch

    from emoplug.train.text_stage import _StageLoss

    return _StageLoss(N_CLASSES, torch.zeros(3), torch.ones(3))


def wav2vec_model(small: bool = False) -> Any:
    """wav2vec2-base's shape (``Wav2Vec2Config()``), random weights; ``small`` cuts widths."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    kwargs = ({"hidden_size": 64, "intermediate_size": 128, "conv_dim": (32,) * 7,
               "num_attention_heads": 4} if small else {})
    torch.manual_seed(0)
    return Wav2Vec2Model(Wav2Vec2Config(**kwargs)).eval()


def results_path(name: str) -> Path:
    return _common.RESULTS / f"{name}.json"
