"""Errors that the CLI prints as one line (exit code 2) instead of a traceback."""

from __future__ import annotations


class EmoplugError(Exception):
    """A user-facing problem: bad input, a missing file, an unknown component."""


class RecipeError(EmoplugError):
    """A recipe that cannot be loaded; ``problems`` lists one ``where: what`` line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {p}" for p in problems]
        super().__init__("\n".join(lines))


class UnknownComponentError(EmoplugError):
    """A component name that no plugin registered."""


class PluginError(EmoplugError):
    """A plugin that failed to load or registered something invalid."""


class ComponentUnavailableError(EmoplugError):
    """A registered component (or one of its options) whose optional dependency is missing."""
