"""Shared test setup: offline, a private cache, and a fresh registry per test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Each test gets its own cache folder and a registry without leftovers."""
    from emoplug.registry import reset_registry

    monkeypatch.setenv("EMOPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "emoplug-cache"))
    monkeypatch.delenv("EMOPLUG_DISABLE_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()
