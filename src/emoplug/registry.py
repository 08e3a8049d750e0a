"""The plugin registry: a pluggy PluginManager over the ``emoplug`` entry-point group.

Entry points are loaded lazily (on first use) and once. Each plugin's registration hooks are
called one plugin at a time, so a broken plugin is reported with its name and distribution
and the others still load.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy
from pydantic import BaseModel

from emoplug import components, hookspecs
from emoplug.errors import ComponentUnavailableError, PluginError, UnknownComponentError

ENTRY_POINT_GROUP = "emoplug"


@dataclass(frozen=True)
class Kind:
    """A component kind: its key in recipes, its registration hook and base class."""

    key: str
    label: str
    hook: str
    base: type


KINDS: dict[str, Kind] = {
    k.key: k
    for k in (
        Kind("text", "text encoder", "emoplug_register_text_encoders", components.TextEncoder),
        Kind("audio", "audio featurizer", "emoplug_register_audio_featurizers",
             components.AudioFeaturizer),
        Kind("fusion", "fusion", "emoplug_register_fusions", components.Fusion),
        Kind("approach", "approach", "emoplug_register_approaches", components.Approach),
        Kind("dataset", "dataset", "emoplug_register_datasets", components.Dataset),
        Kind("protocol", "protocol", "emoplug_register_protocols", components.Protocol),
    )
}


@dataclass
class ComponentSpec:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[[BaseModel], Any]
    config_model: type[BaseModel]
    plugin: str
    distribution: str | None = None
    version: str | None = None
    #: ``Component.unavailable_reason`` of a registered class; None: always available
    availability: Callable[[BaseModel | None], str | None] | None = None

    def unavailable_reason(self, config: BaseModel | None = None) -> str | None:
        """Why the component (or this ``config`` of it) cannot run here; None when it can."""
        return self.availability(config) if self.availability is not None else None

    def validated(self, settings: dict[str, Any] | None = None) -> BaseModel:
        """``settings`` (a recipe mapping without ``type``) validated by the config model;
        raises ``ComponentUnavailableError`` (one line) when that configuration cannot run."""
        config = self.config_model.model_validate(settings or {})
        reason = self.unavailable_reason(config)
        if reason is not None:
            label = KINDS[self.kind].label
            raise ComponentUnavailableError(f"{label} '{self.name}' is unavailable: {reason}")
        return config

    def build(self, settings: dict[str, Any] | None = None) -> Any:
        """Validate ``settings`` (a recipe mapping without ``type``) and build the component."""
        return self.factory(self.validated(settings))


@dataclass
class PluginInfo:
    """A plugin as the registry saw it; ``error`` is set when it is broken."""

    name: str
    distribution: str | None = None
    version: str | None = None
    import_error: str | None = None
    hook_error: str | None = None
    disabled: bool = False
    components: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return self.import_error or self.hook_error


def disabled_plugins() -> set[str]:
    raw = os.environ.get("EMOPLUG_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _tracing() -> bool:
    return os.environ.get("EMOPLUG_TRACE_PLUGINS", "") not in ("", "0", "false", "no")


def _trace(message: str) -> None:
    if _tracing():
        print(f"emoplug-trace: {message}", file=sys.stderr)


class Registry:
    """Components by kind and name, collected from plugins."""

    def __init__(self, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._load_entry_points = load_entry_points
        self._entry_points_loaded = False
        self.plugins: dict[str, PluginInfo] = {}
        self._components: dict[str, dict[str, ComponentSpec]] | None = None
        self._conflicts: dict[tuple[str, str], list[ComponentSpec]] = {}

    # -- plugins ---------------------------------------------------------------------------
    def _ensure_entry_points(self) -> None:
        if self._entry_points_loaded or not self._load_entry_points:
            return
        self._entry_points_loaded = True
        blocked = disabled_plugins()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, dist.name if dist else None, dist.version if dist else None)
            self.plugins[ep.name] = info
            if ep.name in blocked:
                info.disabled = True
                _trace(f"plugin {ep.name} disabled by EMOPLUG_DISABLE_PLUGINS")
                continue
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
                _trace(f"loaded plugin {ep.name} ({ep.value})")
            except Exception as exc:  # a broken plugin must not take the others down
                info.import_error = f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
        self.pm.check_pending()

    def add_plugin(self, plugin: object, name: str) -> None:
        """Register a plugin object (module or instance with hookimpls) by hand, e.g. in a test."""
        self._ensure_entry_points()
        if name in disabled_plugins():
            self.plugins[name] = PluginInfo(name, disabled=True)
            return
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self.plugins[name] = PluginInfo(name)
        self._components = None

    def remove_plugin(self, name: str) -> None:
        """Undo :meth:`add_plugin`."""
        self.pm.unregister(name=name)
        self.plugins.pop(name, None)
        self._components = None

    # -- components ------------------------------------------------------------------------
    def _collect(self) -> dict[str, dict[str, ComponentSpec]]:
        if self._components is not None:
            return self._components
        self._ensure_entry_points()
        found: dict[str, dict[str, ComponentSpec]] = {k: {} for k in KINDS}
        self._conflicts = {}
        for info in self.plugins.values():
            info.components, info.hook_error = [], None
        for kind in KINDS.values():
            caller = getattr(self.pm.hook, kind.hook)
            for impl in caller.get_hookimpls():
                info = self.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
                if info.error:
                    continue
                staged: list[ComponentSpec] = []
                _trace(f"{kind.hook}() -> plugin {impl.plugin_name}")
                try:
                    impl.function(register=self._registrar(kind, info, staged))
                except Exception as exc:
                    info.hook_error = f"hook {kind.hook} raised {type(exc).__name__}: {exc}"
                    continue
                for spec in staged:
                    existing = found[kind.key].get(spec.name)
                    if existing is not None:
                        self._conflicts.setdefault((kind.key, spec.name), [existing]).append(spec)
                    else:
                        found[kind.key][spec.name] = spec
                    info.components.append(f"{kind.key}:{spec.name}")
        self._components = found
        return found

    def _registrar(self, kind: Kind, info: PluginInfo, staged: list[ComponentSpec]):
        def register(name_or_cls: Any, factory: Callable | None = None,
                     config_model: type[BaseModel] | None = None) -> None:
            if isinstance(name_or_cls, type):
                cls = name_or_cls
                if not issubclass(cls, kind.base):
                    raise PluginError(
                        f"{cls.__name__} is not a subclass of emoplug.{kind.base.__name__}")
                name = getattr(cls, "name", None)
                factory, config_model = cls, getattr(cls, "Config", None)
                availability = cls.unavailable_reason
            else:
                name, availability = name_or_cls, None
            if not isinstance(name, str) or not name.isidentifier():
                raise PluginError(f"invalid {kind.label} name {name!r} (use an identifier)")
            if factory is None or not callable(factory):
                raise PluginError(f"{kind.label} {name!r}: factory is not callable")
            if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
                raise PluginError(f"{kind.label} {name!r}: config model is not a pydantic model")
            staged.append(ComponentSpec(kind.key, name, factory, config_model, info.name,
                                        info.distribution, info.version, availability))
        return register

    def names(self, kind: str) -> list[str]:
        return sorted(self._collect()[kind])

    def all(self) -> list[ComponentSpec]:
        comps = self._collect()
        return [comps[k][n] for k in KINDS for n in sorted(comps[k])]

    def conflicts(self) -> dict[tuple[str, str], list[ComponentSpec]]:
        self._collect()
        return self._conflicts

    def get(self, kind: str, name: str) -> ComponentSpec:
        comps = self._collect()[kind]
        label = KINDS[kind].label
        if not isinstance(name, str):
            raise UnknownComponentError(f"a {label} type must be a name, got {name!r}")
        if (kind, name) in self._conflicts:
            owners = " and ".join(
                f"plugin '{s.plugin}' ({s.distribution or 'not installed'})"
                for s in self._conflicts[(kind, name)])
            raise PluginError(f"{label} '{name}' is registered twice: by {owners}; disable one "
                              "with EMOPLUG_DISABLE_PLUGINS=<plugin>")
        if name not in comps:
            available = ", ".join(sorted(comps)) or "none"
            hint = difflib.get_close_matches(str(name), list(comps), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            broken = [f"'{p.name}' ({p.distribution or 'not installed'})"
                      for p in self.plugins.values() if p.error]
            note = f"; plugins that failed to load: {', '.join(broken)}" if broken else ""
            raise UnknownComponentError(
                f"unknown {label} '{name}'{suggestion}; available: {available}{note}")
        return comps[name]

    def build(self, kind: str, mapping: dict[str, Any]) -> Any:
        """Build a component from a recipe mapping ``{type: name, **settings}``."""
        settings = dict(mapping)
        spec = self.get(kind, settings.pop("type"))
        return spec.build(settings)

    def validate(self, kind: str, mapping: dict[str, Any]) -> dict[str, Any]:
        """Validate a recipe mapping; return it fully resolved (defaults filled, ``type`` first).

        Raises ``UnknownComponentError``, ``ComponentUnavailableError`` or pydantic's
        ``ValidationError``."""
        settings = dict(mapping)
        spec = self.get(kind, settings.pop("type"))
        config = spec.validated(settings)
        return {"type": spec.name, **config.model_dump(mode="json")}

    # -- lifecycle hooks -------------------------------------------------------------------
    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a plugin that raises is reported and skipped."""
        self._collect()
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            _trace(f"{hook}() -> plugin {impl.plugin_name}")
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                print(f"emoplug: warning: plugin '{impl.plugin_name}' failed in {hook}: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (entry points loaded on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry (tests; after changing EMOPLUG_DISABLE_PLUGINS)."""
    global _REGISTRY
    _REGISTRY = None

