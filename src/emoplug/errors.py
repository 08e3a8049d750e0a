"""Errors that the CLI prints as one line (exit code 2) instead of a traceback."""

from __future__ import annotations


class EmoplugError(Exception):
    """A user-facing problem: bad input, a missing file, an unknown component."""


class RecipeError(EmoplugError):
    """A recipe that cannot be loaded; ``problems`` lists one ``where: what`` line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(dict.fromkeys(problems))  # one line per mistake, however often met
        lines = [f"{source}: {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class UnknownComponentError(EmoplugError):
    """A component name that no plugin registered."""


class PluginError(EmoplugError):
    """A plugin that failed to load or registered something invalid."""


class SettingError(EmoplugError):
    """A problem with one setting of a component, raised (or returned by ``check``) by the
    component, which does not know where the recipe put it. The core adds the recipe key
    holding the component (:func:`emoplug.components.recipe_key`), so the line names what the
    user wrote: ``text.minilm.pretrained: no directory /x``. ``setting`` is ``type`` for a
    problem of the component as a whole (a missing package is a
    :class:`ComponentUnavailableError` instead)."""

    def __init__(self, setting: str, message: str, key: str | None = None):
        self.setting = setting
        self.message = message
        self.key = key
        where = f"{key}.{setting}" if key else setting
        super().__init__(f"{where}: {message}")

    def at(self, key: str) -> SettingError:
        """This error placed under the recipe key ``key`` (kept when it has one already)."""
        return self if self.key else SettingError(self.setting, self.message, key)


def dataset_problems(exc: EmoplugError) -> list[str]:
    """A dataset's error as recipe problems: its lines keep the key they name
    (``dataset.root: ...``); others get ``dataset: ``."""
    return [line if line.startswith("dataset") else f"dataset: {line}"
            for line in str(exc).splitlines()]


class ComponentUnavailableError(EmoplugError):
    """A registered component (or one of its options) whose optional dependency is missing."""
