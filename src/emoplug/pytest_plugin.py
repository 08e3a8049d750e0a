"""The pytest fixtures of :mod:`emoplug.testing` (a ``pytest11`` entry point of emoplug).

pytest loads this module in every session of an environment where emoplug is installed, so
it stays light to import: torch and emoplug's training code are imported inside the fixtures.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from emoplug.testing import (
    TINY_DEMO,
    component_plugin,
    make_encoded,
    make_encoded_batch,
    run_one_cell,
    run_recipe,
)

if TYPE_CHECKING:
    from emoplug import Corpus, Encoded


@pytest.fixture(scope="session")
def emoplug_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's emoplug cache folder: the demo corpus, tiny models and features are made
    once per test session in ``<pytest basetemp>/emoplug-cache``. Set ``EMOPLUG_TEST_CACHE``
    to a folder to reuse them across sessions (CI caches, nested pytest runs)."""
    shared = os.environ.get("EMOPLUG_TEST_CACHE")
    path = Path(shared) if shared else tmp_path_factory.getbasetemp() / "emoplug-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def tiny_corpus(emoplug_cache_dir: Path) -> Corpus:
    """The tiny demo corpus (60 utterances, 5 sessions, 10 speakers, 4 labels), with audio."""
    from emoplug.registry import get_registry

    dataset = get_registry().build("dataset", TINY_DEMO)
    return dataset.load(need_audio=True, cache_dir=emoplug_cache_dir)


@pytest.fixture
def tiny_encoded() -> Callable[..., Encoded]:
    """:func:`make_encoded`: ``tiny_encoded(batch=4, length=6, dim=16, lengths=None, seed=0,
    pad_value=0.0)``."""
    return make_encoded


@pytest.fixture
def encoded_batch() -> Callable[..., dict[str, Encoded]]:
    """:func:`make_encoded_batch`: ``encoded_batch({"text": 16, "audio": 12}, batch=4)``."""
    return make_encoded_batch


@pytest.fixture
def register_component() -> Iterator[Callable[..., str]]:
    """``register_component(*classes, plugin=None)`` adds component classes to the
    process-wide registry for this test (removed afterwards); returns the plugin name."""
    from emoplug.registry import get_registry

    added: list[tuple[Any, str]] = []
    counter = itertools.count()

    def register(*classes: type, plugin: str | None = None) -> str:
        registry = get_registry()
        name = plugin or f"test-{next(counter)}-{'-'.join(c.__name__ for c in classes)}"
        registry.add_plugin(component_plugin(*classes), name)
        added.append((registry, name))
        return name

    yield register
    for registry, name in reversed(added):
        if registry.pm.has_plugin(name):
            registry.remove_plugin(name)


@pytest.fixture(name="run_recipe")
def run_recipe_fixture(tmp_path: Path, emoplug_cache_dir: Path
                       ) -> Callable[..., list[dict[str, Any]]]:
    """:func:`run_recipe` writing into a fresh folder of ``tmp_path`` per call, with the
    session's cache: ``run_recipe(recipe, overrides=(), folds=None, check=True)``."""
    counter = itertools.count()

    def run(recipe: Mapping[str, Any] | str | os.PathLike, **kwargs: Any
            ) -> list[dict[str, Any]]:
        kwargs.setdefault("cache_dir", emoplug_cache_dir)
        return run_recipe(recipe, tmp_path / f"run-{next(counter)}", **kwargs)
    return run


@pytest.fixture(name="run_one_cell")
def run_one_cell_fixture(tmp_path: Path, emoplug_cache_dir: Path
                         ) -> Callable[..., list[dict[str, Any]]]:
    """:func:`run_one_cell` writing into a fresh folder of ``tmp_path`` per call, with the
    session's cache: ``run_one_cell(fusion=..., approach="direct", text=..., audio=...)``."""
    counter = itertools.count()

    def run(**kwargs: Any) -> list[dict[str, Any]]:
        kwargs.setdefault("cache_dir", emoplug_cache_dir)
        return run_one_cell(tmp_path / f"cell-{next(counter)}", **kwargs)
    return run
