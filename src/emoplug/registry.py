"""The plugin registry: a pluggy PluginManager over the ``emoplug`` entry-point group.

Entry points are loaded lazily (on first use) and once. A plugin that fails in any way (its
import raises, even ``SystemExit``; it implements a hook emoplug does not specify; its hook
raises or registers something invalid) is marked broken with the reason, and the others
load. Every hook is called through pluggy's hook caller, one plugin at a time (a subset
caller per plugin), so hook wrappers and pluggy's monitoring see every call and a failure
is pinned on its plugin.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterator
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
        Kind("asr", "speech recogniser", "emoplug_register_speech_recognisers",
             components.SpeechRecogniser),
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


@dataclass(frozen=True)
class ReportSectionSpec:
    """One registered report section: ``build(run) -> Section``, placed by ``order``."""

    key: str
    build: Callable[[Any], Any]
    order: int
    plugin: str


#: the core's own plugin: it registers the bundled report sections through the same hook
BUILTIN_REPORT_PLUGIN = "report"


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


def emoplug_version() -> str:
    from emoplug import __version__

    return __version__


def disabled_plugins() -> set[str]:
    raw = os.environ.get("EMOPLUG_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _tracing() -> bool:
    return os.environ.get("EMOPLUG_TRACE_PLUGINS", "") not in ("", "0", "false", "no")


def _trace(message: str) -> None:
    if _tracing():
        print(f"emoplug-trace: {message}", file=sys.stderr)


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.wrapper or impl.hookwrapper)


def _trace_call(hook_name: str, impls: list[pluggy.HookImpl], kwargs: dict[str, Any]) -> None:
    """pluggy's before-call monitor: with tracing on, one line per hook call."""
    for impl in impls:
        if not _is_wrapper(impl):
            _trace(f"{hook_name}() -> plugin {impl.plugin_name}")


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hooks ``plugin`` implements that emoplug does not specify (a misspelt name, a hook of
    another emoplug version), each with the closest real name when there is one."""
    specified = [name for name in dir(hookspecs) if name.startswith("emoplug_")]
    unknown = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec() or all(impl.optionalhook for impl in caller.get_hookimpls()
                                    if impl.plugin is plugin):
            continue
        hint = difflib.get_close_matches(caller.name, specified, n=1)
        unknown.append(caller.name + (f" (did you mean {hint[0]}?)" if hint else ""))
    return unknown


class Registry:
    """Components by kind and name, collected from plugins."""

    def __init__(self, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.pm.add_hookcall_monitoring(_trace_call, lambda *args: None)
        self._load_entry_points = load_entry_points
        self._entry_points_loaded = False
        self.plugins: dict[str, PluginInfo] = {}
        self._components: dict[str, dict[str, ComponentSpec]] | None = None
        self._conflicts: dict[tuple[str, str], list[ComponentSpec]] = {}
        self._sections: list[ReportSectionSpec] | None = None
        from emoplug.report import builtin

        info = self.plugins[BUILTIN_REPORT_PLUGIN] = PluginInfo(
            BUILTIN_REPORT_PLUGIN, "emoplug", emoplug_version())
        info.disabled = BUILTIN_REPORT_PLUGIN in disabled_plugins()
        if not info.disabled:
            self._register(builtin, info)

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
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit included: one plugin never ends a command
                info.import_error = f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
                continue
            self._register(module, info)
            if info.error is None:
                _trace(f"loaded plugin {ep.name} ({ep.value})")

    def _register(self, plugin: object, info: PluginInfo) -> None:
        """Register ``plugin`` with pluggy and check its hooks; on any problem it is left out
        and ``info`` says why."""
        try:
            hash(plugin)  # pluggy keys plugins by identity: a module or an instance
            self.pm.register(plugin, name=info.name)
        except Exception as exc:  # e.g. a hook whose arguments the spec does not have
            info.import_error = f"invalid hook implementation: {type(exc).__name__}: {exc}"
            return
        unknown = _unknown_hooks(self.pm, plugin)
        if unknown:
            self.pm.unregister(plugin)
            info.import_error = ("implements hooks emoplug does not have: "
                                 + ", ".join(unknown))

    def add_plugin(self, plugin: object, name: str) -> None:
        """Register a plugin object (module or instance with hookimpls) by hand, e.g. in a
        test; a broken one is marked as such in ``plugins``, like an installed one."""
        self._ensure_entry_points()
        info = self.plugins[name] = PluginInfo(name)
        if name in disabled_plugins():
            info.disabled = True
            return
        self._register(plugin, info)
        self._components = self._sections = None

    def remove_plugin(self, name: str) -> None:
        """Undo :meth:`add_plugin`."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self.plugins.pop(name, None)
        self._components = self._sections = None

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
            for name, call in self._each_plugin(kind.hook):
                info = self.plugins.setdefault(name, PluginInfo(name))
                if info.error:
                    continue
                staged: list[ComponentSpec] = []
                try:
                    call(register=self._registrar(kind, info, staged))
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

    def _each_plugin(self, hook: str) -> Iterator[tuple[str, Callable[..., Any]]]:
        """``(plugin name, caller)`` for each plugin implementing ``hook``: a pluggy subset
        caller holding that plugin's implementation and every plugin's wrappers."""
        impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls() if not _is_wrapper(i)]
        for impl in impls:
            others = [i.plugin for i in impls if i.plugin is not impl.plugin]
            yield impl.plugin_name, self.pm.subset_hook_caller(hook, remove_plugins=others)

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

    def report_sections(self) -> list[ReportSectionSpec]:
        """Every registered report section, in report order (``order``, then key). A key
        registered twice marks the later plugin broken."""
        if self._sections is not None:
            return self._sections
        self._collect()
        found: dict[str, ReportSectionSpec] = {}
        for name, call in self._each_plugin("emoplug_register_report_sections"):
            info = self.plugins.setdefault(name, PluginInfo(name))
            if info.error:
                continue
            staged: list[ReportSectionSpec] = []

            def register(key: str, build: Callable[[Any], Any], order: int = 500,
                         plugin: str = name, staged: list[ReportSectionSpec] = staged) -> None:
                if not isinstance(key, str) or not key.isidentifier():
                    raise PluginError(f"invalid report section key {key!r} (use an identifier)")
                if not callable(build):
                    raise PluginError(f"report section {key!r}: build is not callable")
                staged.append(ReportSectionSpec(key, build, int(order), plugin))

            try:
                call(register=register)
                taken = [s.key for s in staged if s.key in found]
                if taken:
                    raise PluginError(f"report section '{taken[0]}' is already registered by "
                                      f"plugin '{found[taken[0]].plugin}'")
            except Exception as exc:
                info.hook_error = (f"hook emoplug_register_report_sections raised "
                                   f"{type(exc).__name__}: {exc}")
                continue
            found.update((s.key, s) for s in staged)
        self._sections = sorted(found.values(), key=lambda s: (s.order, s.key))
        return self._sections

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
        for name, call in self._each_plugin(hook):
            try:
                call(**kwargs)
            except Exception as exc:
                print(f"emoplug: warning: plugin '{name}' failed in {hook}: "
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

