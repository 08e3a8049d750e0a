"""A content-addressed on-disk cache of arrays (audio features, frozen encoder outputs).

An entry lives at ``<root>/<namespace>/<key[:2]>/<key>.npy``: a 16-byte BLAKE2 digest of the
payload followed by the ``.npy`` payload. Writes go to a temporary file renamed into place, so a
killed process never leaves a half entry; a corrupt entry is detected on read, counted,
deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoplug.files import default_cache_dir, honour_umask

DIGEST_SIZE = 16


_FILE_HASHES: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2 hash of a file's bytes (memoised per path, inode, size and times in a process)."""
    st = os.stat(path)
    memo_key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if memo_key not in _FILE_HASHES:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[memo_key] = h.hexdigest()
    return _FILE_HASHES[memo_key]


def text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0


class FeatureCache:
    """Arrays on disk, keyed by ``(namespace, key)``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.stats = CacheStats()

    def path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key[:2] / f"{key}.npy"

    def get(self, namespace: str, key: str) -> np.ndarray | None:
        """The stored array, or None when absent or corrupt (a corrupt entry is removed)."""
        path = self.path(namespace, key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        digest, payload = blob[:DIGEST_SIZE], blob[DIGEST_SIZE:]
        if hashlib.blake2b(payload, digest_size=DIGEST_SIZE).digest() != digest:
            self._drop_corrupt(path)
            return None
        try:
            array = np.load(io.BytesIO(payload), allow_pickle=False)
        except ValueError:
            self._drop_corrupt(path)
            return None
        self.stats.hits += 1
        return array

    def _drop_corrupt(self, path: Path) -> None:
        self.stats.corrupt += 1
        self.stats.misses += 1
        print(f"emoplug: warning: corrupt cache entry {path} removed; recomputing",
              file=sys.stderr)
        path.unlink(missing_ok=True)

    def put(self, namespace: str, key: str, array: np.ndarray) -> None:
        """Store ``array`` atomically (write a temporary file, then rename)."""
        path = self.path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        payload = buffer.getvalue()
        digest = hashlib.blake2b(payload, digest_size=DIGEST_SIZE).digest()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
        try:
            honour_umask(fd)
            with os.fdopen(fd, "wb") as f:
                f.write(digest)
                f.write(payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.stats.writes += 1

    def contains(self, namespace: str, key: str) -> bool:
        return self.path(namespace, key).exists()

    def get_or_compute(self, namespace: str, key: str,
                       compute: Callable[[], np.ndarray]) -> np.ndarray:
        array = self.get(namespace, key)
        if array is None:
            array = compute()
            self.put(namespace, key, array)
        return array
