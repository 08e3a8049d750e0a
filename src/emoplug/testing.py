"""Test helpers for emoplug plugin authors: inputs, registration and tiny end-to-end runs.

The helpers work in scripts and any test runner; pytest is not imported here. The pytest
fixtures built on them live in :mod:`emoplug.pytest_plugin`, which emoplug declares as a
``pytest11`` entry point, so in any test suite of an environment where emoplug is installed
they are available without a conftest:

- ``tiny_corpus``: a small demo :class:`~emoplug.Corpus` (60 synthetic utterances);
- ``tiny_encoded`` / ``encoded_batch``: factories of random :class:`~emoplug.Encoded` inputs
  with padding (see :func:`make_encoded` and :func:`make_encoded_batch`);
- ``register_component``: register component classes for one test;
- ``run_recipe`` / ``run_one_cell``: run a recipe, or a one-cell recipe, end to end on the
  tiny demo corpus (see :func:`run_recipe` and :func:`run_one_cell`);
- ``emoplug_cache_dir``: the session's cache folder (demo corpus, tiny models, features);
  ``EMOPLUG_TEST_CACHE=<folder>`` makes it persist across sessions.

:func:`check_fusion` checks a fusion against the contract (shapes, padding, gradients).
This module is light to import: torch and emoplug's training code are imported inside the
functions.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emoplug import Encoded, Fusion

#: The tiny demo corpus: 10 speakers x 6 utterances, generated once per cache folder.
TINY_DEMO: dict[str, Any] = {"type": "demo", "utterances_per_speaker": 6}
#: A tiny random BERT whose tokenizer is trained on the corpus; frozen: run once, cached.
TINY_TEXT: dict[str, Any] = {"type": "bert", "tiny": True, "mode": "frozen", "tiny_hidden": 16,
                             "tiny_layers": 1, "tiny_vocab": 100, "max_length": 32}
#: 13 MFCCs and a one-layer CNN encoder of width 16.
TINY_AUDIO: dict[str, Any] = {"type": "mfcc", "n_mfcc": 13,
                              "encoder": {"hidden": 16, "layers": 1, "stride": 2}}

ComponentArg = str | Mapping[str, Any] | None


# -- inputs ----------------------------------------------------------------------------------

#: utterances per class of a small acted corpus (EmoDB's seven classes: 535 utterances)
ACTED_CLASS_COUNTS = (127, 81, 46, 69, 71, 62, 79)


def utterance_statistics(class_counts: tuple[int, ...] = ACTED_CLASS_COUNTS,
                         speakers: int = 10, dim: int = 88, separation: float = 0.9,
                         seed: int = 0) -> tuple[Any, Any, Any]:
    """A synthetic problem with the statistics of utterance-level acoustic functionals
    (eGeMAPS-like) of a small acted corpus, for testing a learner against scikit-learn on
    identical inputs: ``(features [n, dim] float32, labels [n], speakers [n])``.

    Classes overlap heavily (class means ``separation`` noise-stds apart in an
    8-dimensional latent space, with speaker offsets of half a std), the latent space is
    mixed into ``dim`` correlated columns whose scales span 1e-3 to 1e4 around means ten
    times their scale, and one column is constant, as some openSMILE functionals are on
    short clips. Imbalanced classes follow ``class_counts``; utterances are spread evenly
    over ``speakers``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    latent_dim = 8
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(class_counts)])
    rng.shuffle(labels)
    speaker = np.arange(len(labels)) % speakers
    class_means = rng.normal(0.0, separation, (len(class_counts), latent_dim))
    speaker_offsets = rng.normal(0.0, 0.5, (speakers, latent_dim))
    latent = (class_means[labels] + speaker_offsets[speaker]
              + rng.normal(0.0, 1.0, (len(labels), latent_dim)))
    mixing = rng.normal(0.0, 1.0, (latent_dim, dim)) / np.sqrt(latent_dim)
    columns = latent @ mixing + rng.normal(0.0, 0.7, (len(labels), dim))
    scales = 10.0 ** rng.permutation(np.linspace(-3, 4, dim))
    features = columns * scales + 10.0 * scales
    features[:, dim // 2] = 5.0
    return features.astype(np.float32), labels, np.array([f"spk{s:02d}" for s in speaker])


def make_encoded(batch: int = 4, length: int = 6, dim: int = 16, *,
                 lengths: list[int] | None = None, seed: int = 0,
                 pad_value: float = 0.0) -> Encoded:
    """A random :class:`~emoplug.Encoded`: ``sequence [batch, length, dim]``, a padding
    ``mask`` (row 0 is full length, the others random lengths >= 1 unless ``lengths`` is given),
    padded positions set to ``pad_value``, ``pooled`` the masked mean."""
    import torch

    from emoplug import Encoded

    generator = torch.Generator().manual_seed(seed)
    if lengths is None:
        lengths = [length, *torch.randint(1, length + 1, (batch - 1,),
                                          generator=generator).tolist()]
    if len(lengths) != batch or not all(1 <= n <= length for n in lengths):
        raise ValueError(f"lengths must be {batch} values in 1..{length}, got {lengths}")
    mask = torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    sequence = torch.randn(batch, length, dim, generator=generator)
    pooled = (sequence * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    sequence = sequence.masked_fill(~mask.unsqueeze(-1), pad_value)
    return Encoded(sequence=sequence, mask=mask, pooled=pooled)


def make_encoded_batch(dims: Mapping[str, int] | None = None, batch: int = 4, *,
                       lengths: Mapping[str, int] | None = None, seed: int = 0,
                       pad_value: float = 0.0) -> dict[str, Encoded]:
    """``{modality: Encoded}`` as a fusion receives it; default ``{"text": 16, "audio": 12}``
    with 7 tokens and 20 frames at most. Each modality has its own lengths and padding."""
    dims = dict(dims) if dims is not None else {"text": 16, "audio": 12}
    lengths = {"text": 7, "audio": 20, **(lengths or {})}
    return {m: make_encoded(batch, lengths.get(m, 8), d, seed=seed + i, pad_value=pad_value)
            for i, (m, d) in enumerate(dims.items())}


def check_fusion(fusion: Fusion, dims: Mapping[str, int] | None = None, out_dim: int = 4,
                 batch: int = 4) -> None:
    """Assert that ``fusion`` keeps the :class:`~emoplug.Fusion` contract with all the
    modalities of ``dims`` and with each alone: output ``[batch, out_dim]`` and finite,
    unchanged by what the padded positions hold, and a gradient reaching every trainable
    parameter."""
    import torch

    dims = dict(dims) if dims is not None else {"text": 16, "audio": 12}
    singles = [{m: d} for m, d in dims.items()] if len(dims) > 1 else []
    for subset in (dims, *singles):
        where = f"fusion '{fusion.name}' with {sorted(subset)}"
        module = fusion.build(dict(subset), out_dim)
        inputs = make_encoded_batch(subset, batch)
        module.eval()
        with torch.no_grad():
            out = module(inputs)
            noisy = module(make_encoded_batch(subset, batch, pad_value=1e4))
        shape, expected = tuple(out.shape), (batch, out_dim)
        assert shape == expected, f"{where}: output {shape}, expected {expected}"
        assert torch.isfinite(out).all(), f"{where}: output is not finite"
        padding_leaks = not torch.allclose(out, noisy, atol=1e-5)
        assert not padding_leaks, f"{where}: output depends on padded positions (use the mask)"
        module.train()
        module(inputs).sum().backward()
        missing = [n for n, p in module.named_parameters() if p.requires_grad
                   and (p.grad is None or not torch.isfinite(p.grad).all())]
        assert not missing, f"{where}: no finite gradient for {', '.join(missing)}"


# -- registration ----------------------------------------------------------------------------

def component_plugin(*classes: type) -> object:
    """A plugin object whose registration hooks register ``classes`` (any component kinds)."""
    from emoplug import hookimpl
    from emoplug.registry import KINDS

    by_hook: dict[str, list[type]] = {}
    for cls in classes:
        kind = next((k for k in KINDS.values() if issubclass(cls, k.base)), None)
        if kind is None:
            raise TypeError(f"{cls.__name__} is not a subclass of an emoplug component base "
                            "class (Fusion, Approach, TextEncoder, ...)")
        by_hook.setdefault(kind.hook, []).append(cls)

    def hook(group: list[type]) -> Callable[[Any], None]:
        @hookimpl
        def register_all(register: Any) -> None:
            for cls in group:
                register(cls)
        return register_all

    hooks = {name: staticmethod(hook(group)) for name, group in by_hook.items()}
    return type("ComponentPlugin", (), hooks)()


# -- end-to-end runs -------------------------------------------------------------------------

def run_recipe(recipe: Mapping[str, Any] | str | os.PathLike, output_dir: str | os.PathLike, *,
               overrides: tuple[str, ...] = (), cache_dir: str | os.PathLike | None = None,
               folds: int | None = None, check: bool = True) -> list[dict[str, Any]]:
    """Validate ``recipe`` (a mapping or a YAML file), run it in this process with
    :func:`emoplug.train.runner.run_plan` and return each job's ``result.json``, in plan order.

    ``cache_dir`` replaces the recipe's; ``folds`` runs only the first N folds; with ``check``
    a failed job raises ``AssertionError`` carrying its traceback."""
    from emoplug.files import read_json
    from emoplug.recipe import apply_overrides, build_plan, read_yaml
    from emoplug.train.runner import run_plan

    if isinstance(recipe, (str, os.PathLike)):
        source, data = str(recipe), read_yaml(recipe)
    else:
        source, data = "<recipe>", copy.deepcopy(dict(recipe))
    data = apply_overrides(data, overrides, source)
    if cache_dir is not None:
        data["cache_dir"] = str(cache_dir)
    plan = build_plan(data, source, folder=Path(source).absolute().parent
                      if isinstance(recipe, (str, os.PathLike)) else None,
                      overridden={item.partition("=")[0] for item in overrides})
    if folds is not None:
        kept = set(plan.folds[:folds])
        plan.jobs = [job for job in plan.jobs if job.fold in kept]
    output = Path(output_dir)
    run_plan(plan, output, verbosity=0)
    results = [read_json(output / "jobs" / job.id / "result.json") or
               {"status": "missing", "job": job.id} for job in plan.jobs]
    failed = [r for r in results if r["status"] != "done"]
    if check and failed:
        first = failed[0]
        raise AssertionError(f"{len(failed)} of {len(results)} jobs failed; first: "
                             f"{first.get('cell_label')} fold={first.get('fold')}: "
                             f"{first.get('error')}\n{first.get('traceback', '')}")
    return results


def _section(value: ComponentArg) -> dict[str, Any] | None:
    if value is None:
        return None
    mapping = {"type": value} if isinstance(value, str) else dict(value)
    if "type" not in mapping:
        raise ValueError(f"a component mapping needs a 'type': {mapping}")
    return mapping


def one_cell_recipe(*, fusion: ComponentArg, approach: ComponentArg = "direct",
                    text: ComponentArg = TINY_TEXT, audio: ComponentArg = TINY_AUDIO,
                    epochs: int = 1, seed: int = 0,
                    dataset: Mapping[str, Any] = TINY_DEMO) -> dict[str, Any]:
    """A recipe with one cell (an ``extra`` cell, so the fusion is used even with one
    modality). Each component is a type name (default settings), a ``{type: ..., ...}``
    mapping, or None for an absent modality; the defaults are :data:`TINY_TEXT` and
    :data:`TINY_AUDIO`. Protocol: leave one session out."""
    components = {"text": _section(text), "audio": _section(audio),
                  "fusion": _section(fusion), "approach": _section(approach)}
    if components["fusion"] is None or components["approach"] is None:
        raise ValueError("a cell needs a fusion and an approach")
    return {
        "name": "one-cell",
        "dataset": dict(dataset),
        "protocol": {"type": "loso"},
        "seeds": [seed],
        "train": {"epochs": epochs, "batch_size": 16, "patience": 1},
        **{kind: {c["type"]: c} for kind, c in components.items() if c is not None},
        "extra": [{kind: (c["type"] if c is not None else None)
                   for kind, c in components.items()}],
    }


def run_one_cell(output_dir: str | os.PathLike, *, fusion: ComponentArg,
                 approach: ComponentArg = "direct", text: ComponentArg = TINY_TEXT,
                 audio: ComponentArg = TINY_AUDIO, epochs: int = 1, folds: int | None = 1,
                 seed: int = 0, cache_dir: str | os.PathLike | None = None,
                 check: bool = True) -> list[dict[str, Any]]:
    """Run :func:`one_cell_recipe` end to end on the tiny demo corpus (by default the first
    leave-one-session-out fold only) and return the jobs' results."""
    recipe = one_cell_recipe(fusion=fusion, approach=approach, text=text, audio=audio,
                             epochs=epochs, seed=seed)
    return run_recipe(recipe, output_dir, cache_dir=cache_dir, folds=folds, check=check)
