"""Errors that the CLI prints as one line (exit code 2) instead of a traceback; file-system
errors (:func:`storage_error`) also get one line, exit code 3 when the disk is full."""

from __future__ import annotations

import errno
import os


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


#: exit code of a run stopped because its storage is full (2 is bad input, 1 a failed job)
EXIT_NO_SPACE = 3

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_STORAGE_ERRNOS = _NO_SPACE | {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                               errno.EISDIR}


def storage_error(exc: BaseException) -> OSError | None:
    """The file-system error (no space, read-only, no permission, a file where a folder is
    expected, ...) behind ``exc``, following its causes; None for any other error. Such an
    error is the storage's, not one job's: a run stops on it instead of recording a failed
    job (recording would fail too)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return current
        if "No space left on device" in str(current):  # torch.save wraps it in RuntimeError
            return OSError(errno.ENOSPC, "No space left on device")
        current = current.__cause__ or current.__context__
    return None


def storage_error_in(message: str) -> OSError | None:
    """The file-system error a job's recorded ``error`` line reports (a job that failed
    writing its files), or None."""
    for number in sorted(_STORAGE_ERRNOS - {errno.EACCES, errno.EPERM, errno.ENOTDIR,
                                            errno.EISDIR}):
        if os.strerror(number) in message:
            return OSError(number, os.strerror(number), message.split(": ")[-1].strip("'"))
    return None


def is_no_space(exc: OSError) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    return exc.errno in _NO_SPACE


def storage_message(exc: OSError) -> str:
    """One line for a file-system error, naming the path: what went wrong and what to do."""
    path = exc.filename if exc.filename is not None else "a file"
    if is_no_space(exc):
        return (f"no space left on device writing {path}; finished jobs are kept; free space "
                "and run the same command to resume")
    reasons = {
        errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "a file is in the way (a part of this path is a file, not a folder)",
        errno.EISDIR: "is a folder, not a file",
        errno.EEXIST: "a file is in the way (a file exists where a folder belongs)"}
    return f"cannot use {path}: {reasons.get(exc.errno or 0, exc.strerror or str(exc))}"
