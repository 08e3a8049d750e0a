"""How much a featurizer writes to the feature cache: :class:`CacheLayout`, the shape and
dtype of its arrays, and the bytes they take for a corpus of a given duration.

An entry is one ``.npy`` file per audio file (:mod:`emoplug.data.cache`): a 16-byte digest,
a 128-byte ``.npy`` header, then ``rows x dim`` values. Frame-level features have
``rows = rows_per_second x seconds + rows_per_file`` (centred frames add one); utterance-level
ones (functionals, pooled statistics) have ``rows_per_second = 0`` and one row per file. The
estimate is the files' logical size; the file system rounds each file up to its block size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from emoplug.errors import EmoplugError, SettingError

if TYPE_CHECKING:
    from emoplug.recipe import Plan
    from emoplug.registry import Registry

#: bytes every cache entry adds to its array: the payload digest and the .npy header
ENTRY_OVERHEAD = 16 + 128


@dataclass(frozen=True)
class CacheLayout:
    """What ``featurize`` returns for ``seconds`` of audio: ``[rows, dim]`` of ``dtype``,
    ``rows = rows_per_second * seconds + rows_per_file``; ``note`` says how ``dim`` is made
    (``13 layers x 768``)."""

    rows_per_second: float
    rows_per_file: float
    dim: int
    dtype: str
    note: str = ""

    @property
    def itemsize(self) -> int:
        import numpy as np

        return np.dtype(self.dtype).itemsize

    def bytes_for(self, seconds: float, files: int) -> int:
        """Bytes in the cache for ``files`` audio files holding ``seconds`` of audio."""
        rows = self.rows_per_second * seconds + self.rows_per_file * files
        return round(rows * self.dim * self.itemsize + ENTRY_OVERHEAD * files)

    def describe(self) -> str:
        """``float16 [50/s, 3 layers x 768]`` or ``float16 [1 per file, 2304]``."""
        rows = (f"{self.rows_per_second:g}/s" if self.rows_per_second
                else f"{self.rows_per_file:g} per file")
        return f"{self.dtype} [{rows}, {self.note or self.dim}]"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "itemsize": self.itemsize}


def human_bytes(n: float) -> str:
    """``1.2 GB``, ``340 MB``, ``12 kB`` (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


#: utterance length assumed for a per-hour figure when the corpus is not read
ASSUMED_UTTERANCE_S = 10.0


def audio_duration(paths: Iterable[str]) -> tuple[float, int]:
    """Seconds of audio in the distinct files ``paths`` and how many there are, from their
    headers (``soundfile.info``); unreadable files are left out."""
    import soundfile as sf

    seconds, files = 0.0, 0
    for path in set(paths):
        try:
            seconds += sf.info(path).duration
        except (sf.LibsndfileError, RuntimeError, OSError):
            continue
        files += 1
    return seconds, files


def plan_cache_sizes(plan: Plan, registry: Registry,
                     corpus: tuple[float, int] | None) -> list[dict[str, Any]]:
    """Per audio entry of ``plan`` (recipe key), the cache its featurizer will write:
    its layout, bytes per hour of audio (at the corpus's mean utterance length, else at
    :data:`ASSUMED_UTTERANCE_S`) and, when ``corpus`` gives ``(seconds, files)``, bytes for
    the corpus; or ``unknown``, the reason it cannot be told (a checkpoint not cached)."""
    seen: dict[str, dict[str, Any]] = {}
    for cell in plan.cells:
        config = cell.config["audio"]
        if config is None:
            continue
        key = plan.component_key("audio", config)
        if key in seen:
            continue
        utterance_s = (corpus[0] / corpus[1] if corpus and corpus[1]
                       else ASSUMED_UTTERANCE_S)
        row: dict[str, Any] = {"audio": key, "type": config["type"]}
        try:
            layout = registry.build("audio", config).cache_layout()
        except EmoplugError as exc:
            layout, row["unknown"] = None, str(exc.at(key) if isinstance(exc, SettingError)
                                               else exc)
        if layout is None:
            row.setdefault("unknown", "the featurizer does not say")
        else:
            row["layout"], row["shape"] = layout.as_dict(), layout.describe()
            row["bytes_per_hour"] = layout.bytes_for(3600.0, round(3600.0 / utterance_s))
            row["utterance_seconds"] = round(utterance_s, 3)
            if corpus is not None:
                row["corpus_bytes"] = layout.bytes_for(*corpus)
        seen[key] = row
    return list(seen.values())
