"""Registry: loading, name errors, collisions, disabling, broken plugins, config validation."""

from __future__ import annotations

import pytest
from fakes import FakePlugin, fake_registry
from pydantic import ValidationError

from emoplug import ComponentConfig, Fusion, hookimpl, missing_package
from emoplug.errors import ComponentUnavailableError, PluginError, UnknownComponentError
from emoplug.registry import Registry


def test_components_by_kind_and_name():
    registry = fake_registry()
    assert registry.names("approach") == ["direct", "two_stage"]
    spec = registry.get("fusion", "attention")
    assert spec.plugin == "fake"
    assert registry.validate("fusion", {"type": "attention", "heads": 2}) == {
        "type": "attention", "attention": True, "heads": 2}


def test_unknown_name_lists_available_and_close_match():
    registry = fake_registry()
    with pytest.raises(UnknownComponentError) as err:
        registry.get("fusion", "atention")
    message = str(err.value)
    assert "unknown fusion 'atention'" in message
    assert "did you mean 'attention'?" in message
    assert "available: attention, early, hybrid, late, none" in message


def test_config_validated_by_component_model():
    registry = fake_registry()
    with pytest.raises(ValidationError) as err:
        registry.validate("fusion", {"type": "attention", "heads": 0})
    assert err.value.errors()[0]["loc"] == ("heads",)
    with pytest.raises(ValidationError):
        registry.validate("fusion", {"type": "attention", "no_such_key": 1})


class _Duplicate:
    @hookimpl
    def emoplug_register_fusions(self, register):
        class Early(Fusion):
            name = "early"
        register(Early)


def test_name_registered_twice_names_both_plugins():
    registry = fake_registry()
    registry.add_plugin(_Duplicate(), "dupe")
    with pytest.raises(PluginError) as err:
        registry.get("fusion", "early")
    assert "plugin 'fake'" in str(err.value) and "plugin 'dupe'" in str(err.value)
    assert ("fusion", "early") in registry.conflicts()
    registry.remove_plugin("dupe")
    assert registry.get("fusion", "early").plugin == "fake"


class _Raising:
    @hookimpl
    def emoplug_register_fusions(self, register):
        raise RuntimeError("boom")


class _BadConfig:
    @hookimpl
    def emoplug_register_fusions(self, register):
        register("odd", lambda config: None, dict)


def test_broken_plugin_is_marked_and_others_still_load():
    registry = fake_registry()
    registry.add_plugin(_Raising(), "raising")
    registry.add_plugin(_BadConfig(), "badconfig")
    assert "early" in registry.names("fusion")
    assert "boom" in registry.plugins["raising"].error
    with pytest.raises(UnknownComponentError, match="plugins that failed to load: 'raising'"):
        registry.get("fusion", "whatever")
    assert "not a pydantic model" in registry.plugins["badconfig"].error


def test_register_with_name_factory_and_config_model():
    class Settings(ComponentConfig):
        gain: float = 1.0

    class Plugin:
        @hookimpl
        def emoplug_register_fusions(self, register):
            register("scaled", lambda config: ("built", config.gain), Settings)

    registry = Registry(load_entry_points=False)
    registry.add_plugin(Plugin(), "scaled")
    assert registry.build("fusion", {"type": "scaled", "gain": 2}) == ("built", 2.0)


def test_disable_plugins_env(monkeypatch):
    monkeypatch.setenv("EMOPLUG_DISABLE_PLUGINS", "fake, other")
    registry = Registry(load_entry_points=False)
    registry.add_plugin(FakePlugin(), "fake")
    assert registry.names("fusion") == []
    assert registry.plugins["fake"].disabled


def test_bundled_plugins_load_through_entry_points():
    registry = Registry()
    plugins = registry.plugins if registry.all() is not None else {}
    for name in ("text", "audio", "fusion", "approaches", "data"):
        assert plugins[name].distribution == "emoplug"
        assert plugins[name].error is None


def test_bundled_plugin_can_be_disabled(monkeypatch):
    monkeypatch.setenv("EMOPLUG_DISABLE_PLUGINS", "fusion")
    registry = Registry()
    assert not set(registry.names("fusion")) & {"attention", "early", "hybrid", "late", "none"}
    assert registry.plugins["fusion"].disabled


def test_trace_mode_prints_each_hook_call(monkeypatch, capsys):
    monkeypatch.setenv("EMOPLUG_TRACE_PLUGINS", "1")
    fake_registry().names("fusion")
    err = capsys.readouterr().err
    assert "emoplug-trace: emoplug_register_fusions() -> plugin fake" in err


class _Observer:
    """A hook wrapper around every plugin's fusion registration."""

    def __init__(self):
        self.calls = 0

    @hookimpl(wrapper=True)
    def emoplug_register_fusions(self, register):
        self.calls += 1
        return (yield)


def test_hooks_go_through_pluggy_so_wrappers_and_monitors_see_each_call():
    registry = fake_registry()
    observer = _Observer()
    registry.add_plugin(observer, "observer")
    calls = []
    registry.pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append((name, {i.plugin_name for i in impls})),
        lambda *args: None)
    assert "early" in registry.names("fusion")
    assert observer.calls == 1  # one plugin (fake) registers fusions: one wrapped call
    assert ("emoplug_register_fusions", {"fake", "observer"}) in calls
    assert registry.plugins["observer"].error is None


class _Lifecycle:
    def __init__(self, fail: bool):
        self.fail, self.results = fail, []

    @hookimpl
    def emoplug_job_finished(self, job, result):
        if self.fail:
            raise RuntimeError("tracker is down")
        self.results.append(result["status"])


def test_a_plugin_raising_in_a_lifecycle_hook_is_reported_and_the_others_still_run(capsys):
    registry = fake_registry()
    failing, working = _Lifecycle(True), _Lifecycle(False)
    registry.add_plugin(failing, "failing")
    registry.add_plugin(working, "working")
    registry.notify("emoplug_job_finished", job=None, result={"status": "done"})
    assert working.results == ["done"]
    assert "emoplug: warning: plugin 'failing' failed in emoplug_job_finished: RuntimeError: " \
           "tracker is down" in capsys.readouterr().err


class _Misspelt:
    @hookimpl
    def emoplug_register_fusion(self, register):  # the hook is emoplug_register_fusions
        pass


def test_a_misspelt_hook_marks_its_plugin_broken_and_the_others_load():
    registry = fake_registry()
    registry.add_plugin(_Misspelt(), "misspelt")
    assert "early" in registry.names("fusion")
    assert registry.plugins["misspelt"].error == (
        "implements hooks emoplug does not have: emoplug_register_fusion "
        "(did you mean emoplug_register_fusions?)")


class _NeedsPackage:
    """A fusion that needs a package only in one of its settings, and one that always does."""

    @hookimpl
    def emoplug_register_fusions(self, register):
        class Fancy(Fusion):
            name = "fancy"

            class Config(ComponentConfig):
                fast: bool = False

            @classmethod
            def unavailable_reason(cls, config=None):
                if config is not None and config.fast:
                    return missing_package("no_such_module_xyz", "pip install fancy[fast]")
                return None

        class Absent(Fusion):
            name = "absent"

            @classmethod
            def unavailable_reason(cls, config=None):
                return missing_package("no_such_module_xyz", "pip install absent")

        register(Fancy)
        register(Absent)


def test_unavailable_component_is_refused_at_validation_with_its_reason():
    registry = fake_registry()
    registry.add_plugin(_NeedsPackage(), "needs")
    assert registry.validate("fusion", {"type": "fancy"}) == {"type": "fancy", "fast": False}
    with pytest.raises(ComponentUnavailableError) as err:
        registry.validate("fusion", {"type": "fancy", "fast": True})
    assert str(err.value) == ("fusion 'fancy' is unavailable: needs no_such_module_xyz, which "
                              "is not installed: pip install fancy[fast]")
    with pytest.raises(ComponentUnavailableError, match="pip install absent"):
        registry.build("fusion", {"type": "absent"})
    assert registry.get("fusion", "fancy").unavailable_reason() is None
    assert "pip install absent" in registry.get("fusion", "absent").unavailable_reason()
    assert registry.get("fusion", "early").unavailable_reason() is None


def test_missing_package_finds_modules_without_importing_them():
    assert missing_package("json", "x") is None
    assert missing_package("no_such_module_xyz", "pip install y").endswith("pip install y")
