"""Small file helpers every part of emoplug shares; light to import (no numpy, no torch).

- :func:`write_json_atomic` / :func:`read_json`: run-folder JSON written whole or not at all;
- :func:`link_or_copy_tree`: copy a folder, hard-linking its weight files;
- :func:`default_cache_dir`: where features, tiny models and the demo corpus are cached.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary sibling file and rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``; None when it is missing or not (yet) valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def default_cache_dir() -> Path:
    """``$EMOPLUG_CACHE``, else the user cache folder (e.g. ``~/.cache/emoplug``)."""
    env = os.environ.get("EMOPLUG_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("emoplug"))


def link_or_copy_tree(source: Path, target: Path) -> None:
    """Copy a folder; weight files (never edited in place) are hard-linked where the file
    system allows, so they take no extra space."""
    def link_or_copy(src: str, dst: str) -> None:
        if src.endswith(".safetensors"):
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)
