"""``<run>/work.log``: who started, ended, lost, discarded and abandoned each unit of work, and
the audit that counts from it the units started more than once.

One line per event: ``time host:pid launch rank=R event unit [key=value ...]``. Events:

- ``start``: a process begins a unit (a text stage or a job);
- ``end``: it recorded the unit's result (``result=done`` or ``result=failed``);
- ``lost``: its lease on the unit is no longer its own (``why=stalled``: the process did not
  run for ``stalled_s`` seconds, as under SIGSTOP; ``why=unrenewed``: renewals failed, e.g.
  ``EIO`` on a shared file system; ``why=taken``: another process's lease was found);
- ``discard``: a result it computed after losing the lease, thrown away unwritten;
- ``abandon``: it stopped working on the unit unfinished (``why=SIGTERM``, ``why=SIGINT``: a
  stop signal; ``why=error``: an error that ended the process), its lease released.

A unit is *started twice* when a ``start`` follows an earlier attempt by a process that was
neither stopped nor dead: the earlier attempt is excused only when it ended in ``abandon``, in
``end result=failed`` (a failure is retried), in ``lost why=stalled`` with a stall at least as
long as its lease's timeout (the process was frozen: another process took the unit over by
the rules), or with no line at all from a process that no longer runs (killed by SIGKILL).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

WORK_LOG = "work.log"
CLOSING = ("end", "lost", "discard", "abandon")


@dataclass(frozen=True)
class WorkEvent:
    """One line of ``work.log``."""

    process: str  # host:pid
    launch: str
    event: str
    unit: str
    details: dict[str, str] = field(default_factory=dict)


def append(run_dir: Path, process: str, launch: str, rank: int, event: str, unit: str,
           **details: object) -> None:
    """Append one event to ``<run_dir>/work.log`` (one ``write`` of a whole line, in append
    mode, so lines of concurrent processes do not interleave)."""
    extra = "".join(f" {key}={value}" for key, value in details.items())
    line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {process} {launch} rank={rank} {event} "
            f"{unit}{extra}\n")
    with open(run_dir / WORK_LOG, "a") as f:
        f.write(line)


def read(run_dir: Path) -> list[WorkEvent]:
    """Every event of ``<run_dir>/work.log`` in order (none when there is no log)."""
    path = run_dir / WORK_LOG
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue  # a line cut short by a kill mid-write
        details = dict(f.split("=", 1) for f in fields[6:] if "=" in f)
        events.append(WorkEvent(fields[1], fields[2], fields[4], fields[5], details))
    return events


@dataclass
class WorkAudit:
    """What ``work.log`` shows: units started, started more than once (see the module's
    docstring), whose result was discarded, and ended (a result recorded)."""

    started: set[str] = field(default_factory=set)
    started_twice: set[str] = field(default_factory=set)
    discarded: set[str] = field(default_factory=set)
    ended: dict[str, int] = field(default_factory=dict)


def audit(events: list[WorkEvent], alive: Callable[[str], bool] | None = None) -> WorkAudit:
    """Count from ``events`` what :class:`WorkAudit` holds; ``alive(process)`` tells whether a
    ``host:pid`` still runs (default: a pid on this host that exists)."""
    alive = alive or _alive_here
    result = WorkAudit()
    attempts: dict[str, list[tuple[str, list[WorkEvent]]]] = {}  # unit -> (process, closing)
    for event in events:
        unit_attempts = attempts.setdefault(event.unit, [])
        if event.event == "start":
            result.started.add(event.unit)
            unit_attempts.append((event.process, []))
            continue
        if event.event == "discard":
            result.discarded.add(event.unit)
        if event.event == "end":
            result.ended[event.unit] = result.ended.get(event.unit, 0) + 1
        for process, closing in reversed(unit_attempts):
            if process == event.process:
                closing.append(event)
                break
    for unit, unit_attempts in attempts.items():
        if any(not _excused(*attempt, alive) for attempt in unit_attempts[:-1]):
            result.started_twice.add(unit)
    return result


def _excused(process: str, closing: list[WorkEvent], alive: Callable[[str], bool]) -> bool:
    """Whether a later start of the unit may follow this attempt (see the module docstring)."""
    if not closing:
        return not alive(process)
    first = closing[0]
    if first.event == "abandon":
        return True
    if first.event == "end":
        return first.details.get("result") == "failed"
    if first.event == "lost" and first.details.get("why") == "stalled":
        try:
            return float(first.details["stalled_s"]) >= float(first.details["timeout_s"])
        except (KeyError, ValueError):
            return False
    return False


def _alive_here(process: str) -> bool:
    host, _, pid = process.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell: assume it runs
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
