"""The settings a ``tune:`` section searches, applied to a cell's config.

A setting is ``train.<key>`` (a training setting a cell may set for itself) or
``<section>.<key>[.<key>...]``: a path into one of the cell's component configs (``text``,
``audio``, ``fusion``, ``approach``), such as ``audio.encoder.hidden``. A cell without that
component (an audio-only cell and ``text.lr``) is not searched on it. Applying values
re-validates the component through its own config model, so a trial runs only settings the
component accepts. Light to import: no torch, no Optuna.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from emoplug.errors import EmoplugError
from emoplug.recipe import COMPONENT_SECTIONS
from emoplug.registry import Registry


def split_key(key: str) -> tuple[str, list[str]]:
    """``"audio.encoder.hidden"`` -> ``("audio", ["encoder", "hidden"])``."""
    section, _, rest = key.partition(".")
    return section, [part for part in rest.split(".") if part]


def applies(key: str, config: dict[str, Any]) -> bool:
    """Whether a cell (its resolved ``config``) has what ``key`` sets."""
    section, _ = split_key(key)
    return section == "train" or config.get(section) is not None


def apply_values(registry: Registry, config: dict[str, Any], values: dict[str, Any],
                 train_keys: frozenset[str]) -> dict[str, Any]:
    """A copy of a cell's resolved ``config`` with ``values`` set (keys that do not apply to
    the cell are skipped); each changed component is validated again by its config model.
    Raises :class:`EmoplugError` naming the setting a component refuses."""
    out = copy.deepcopy(config)
    touched: set[str] = set()
    for key, value in values.items():
        section, path = split_key(key)
        if not applies(key, out):
            continue
        if section == "train":
            if len(path) != 1 or path[0] not in train_keys:
                raise EmoplugError(f"tune.space.{key}: not a training setting a cell may set "
                                   f"(one of {', '.join(sorted(train_keys))})")
            out["train"] = {**(out.get("train") or {}), path[0]: value}
            continue
        if section not in COMPONENT_SECTIONS or not path:
            raise EmoplugError(f"tune.space.{key}: a setting is train.<key> or "
                               f"<{'|'.join(COMPONENT_SECTIONS)}>.<key>[.<key>...]")
        target = out[section]
        for part in path[:-1]:
            if not isinstance(target.get(part), dict):
                raise EmoplugError(f"tune.space.{key}: {section} '{out[section]['type']}' has "
                                   f"no settings group '{part}'")
            target = target[part]
        target[path[-1]] = value
        touched.add(section)
    for section in touched:
        try:
            out[section] = registry.validate(section, out[section])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise EmoplugError(f"tune.space: {section} '{out[section]['type']}' refuses "
                               f"{where}={first.get('input')!r}: "
                               f"{first['msg'].removeprefix('Value error, ')}") from None
    return out


def boundary_values(spec: Any) -> list[Any]:
    """The values of one dimension worth validating before a run: its bounds or choices."""
    if isinstance(spec, list):
        return list(spec)
    return [spec.low, spec.high]
