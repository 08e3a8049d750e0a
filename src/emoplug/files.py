"""Small file helpers every part of emoplug shares; light to import (no numpy, no torch).

- :func:`write_json_atomic` / :func:`read_json`: run-folder JSON written whole or not at all
  (with the permissions the umask gives any new file);
- :func:`check_writable_folder`: a folder checked writable before any work;
- :func:`link_or_copy_tree`: copy a folder, hard-linking its weight files;
- :func:`default_cache_dir`: where features, tiny models and the demo corpus are cached.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's umask: from ``/proc/self/status`` where there is one (reading it
    there changes nothing), else by setting it and putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(fd: int) -> None:
    """Give a file made by ``tempfile.mkstemp`` (mode 0600) the permissions the umask gives
    any new file, so others on a shared file system can read what emoplug writes."""
    os.fchmod(fd, 0o666 & ~_umask())


def honour_umask_tree(path: Path) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (mode 0700) and everything in it (some
    writers, safetensors among them, make files 0600) the permissions the umask gives any new
    folder and file; called before the folder is renamed into place."""
    mask = _umask()
    os.chmod(path, 0o777 & ~mask)
    for folder, subfolders, files in os.walk(path):
        for name in subfolders:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            file = os.path.join(folder, name)
            if not os.path.islink(file):
                os.chmod(file, 0o666 & ~mask)


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """A temporary sibling of ``folder`` to fill in the block; when the block ends without an
    error it replaces ``folder`` whole (with the permissions the umask gives), else it is
    removed. Readers see the old folder or the new one, never half of one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        honour_umask_tree(tmp)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary sibling file and rename it into place. The file gets the
    permissions the umask gives any new file (``mkstemp`` alone makes it 0600: other users
    of a shared file system could not read the results)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        honour_umask(fd)
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable_folder(path: Path, key: str) -> None:
    """Stop a command before any work when the folder ``path`` could not be written: a
    part of it is a file, or its nearest existing folder is read-only, not permitted or full
    (tried by creating and removing a file there; nothing else is created). Raises
    :class:`EmoplugError` naming ``key`` (e.g. ``--output``) and the path."""
    from emoplug.errors import EmoplugError, storage_message

    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == Path(path).expanduser().absolute() else \
            f"is under the file {existing}"
        raise EmoplugError(f"{key}: {path} {where}, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        exc.filename = str(path)
        raise EmoplugError(f"{key}: {storage_message(exc)}") from None


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
