"""Leases on units of work (a text stage, a job) shared by every launch of one run folder.

A unit is claimed by creating ``<run>/leases/<unit>.json`` atomically (a complete file is
hard-linked into place, which fails when a lease exists). It records its owner: host, pid,
launch token, rank and a per-process nonce. While a process holds leases, a background
thread renews their heartbeat (the file's mtime) every ``timeout / 6`` seconds. A lease
whose heartbeat is older than the timeout, or whose owner is a dead process on this host,
is stale: the first process to rename it aside takes the unit over. A finished unit's lease
is removed. The timeout is ``EMOPLUG_LEASE_TIMEOUT`` seconds (default 60).

``<run>/work.log`` keeps who did what: a line when a process starts a unit and when it ends
one (``host:pid launch rank event unit``), so a unit trained twice would show two ends.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoplug.errors import EmoplugError
from emoplug.files import honour_umask

TIMEOUT_ENV = "EMOPLUG_LEASE_TIMEOUT"
WORK_LOG = "work.log"
DEFAULT_TIMEOUT = 60.0


def lease_timeout() -> float:
    """Seconds without a heartbeat after which a lease may be taken over."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise EmoplugError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def launch_token(state: Any) -> str:
    """A token shared by all processes of this launch (rank 0 draws it)."""
    token = [new_token()]
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(token, from_process=0)
    return token[0]


@dataclass(frozen=True)
class Holder:
    """Who holds a lease another process found: ``host:pid`` of launch ``token``."""

    host: str
    pid: int
    token: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class Leases:
    """This process's leases in one run folder, their heartbeat and their takeover."""

    def __init__(self, output_dir: Path, token: str, rank: int, timeout: float | None = None,
                 enabled: bool = True):
        self.root = output_dir / "leases"
        self.enabled = enabled  # off under ddp: every rank runs every unit
        if enabled:
            self.root.mkdir(parents=True, exist_ok=True)
        self.token, self.rank = token, rank
        self.timeout = lease_timeout() if timeout is None else timeout
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.nonce = uuid.uuid4().hex
        self.held: dict[str, Path] = {}
        self.taken_over: list[tuple[str, Holder]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def path(self, unit: str) -> Path:
        return self.root / f"{unit}.json"

    def take(self, unit: str) -> bool:
        """Claim ``unit``: True when this process now holds its lease (a fresh one, or one
        taken over from a stale owner); False while another live process holds it."""
        if not self.enabled:
            return True
        path = self.path(unit)
        if self._create(path):
            return self._hold(unit, path)
        record = _read(path)
        if record is None or not self._stale(path, record):
            return False
        if not self._take_over(path, record):
            return False
        self.taken_over.append((unit, _holder(record)))
        return self._hold(unit, path)

    def holder(self, unit: str) -> Holder | None:
        """The live owner of ``unit``'s lease, None when it is free or stale."""
        if not self.enabled:
            return None
        path = self.path(unit)
        record = _read(path)
        if record is None or self._stale(path, record):
            return None
        return _holder(record)

    def owns(self, unit: str) -> bool:
        """Whether this process still holds ``unit``'s lease (not taken over meanwhile)."""
        if not self.enabled:
            return True
        return (_read(self.path(unit)) or {}).get("nonce") == self.nonce

    def release(self, unit: str) -> None:
        """Drop this process's lease on ``unit`` (a lease another process took over stays)."""
        with self._lock:
            path = self.held.pop(unit, None)
        if path is not None and (_read(path) or {}).get("nonce") == self.nonce:
            path.unlink(missing_ok=True)

    def release_all(self) -> None:
        """Drop every lease this process holds and stop the heartbeat."""
        self._stop.set()
        for unit in list(self.held):
            self.release(unit)

    def note(self, event: str, unit: str) -> None:
        """Append ``event`` (start, end) of ``unit`` by this process to ``work.log``."""
        if not self.enabled:
            return
        with open(self.root.parent / WORK_LOG, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.host}:{self.pid} "
                    f"{self.token} rank={self.rank} {event} {unit}\n")

    def _hold(self, unit: str, path: Path) -> bool:
        with self._lock:
            self.held[unit] = path
            if self._beat is None:
                self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                              name="emoplug-leases")
                self._beat.start()
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.timeout / 6):
            with self._lock:
                paths = list(self.held.values())
            for path in paths:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass

    def _create(self, path: Path) -> bool:
        """Link a complete lease file into place; False when one exists."""
        record = {"host": self.host, "pid": self.pid, "launch": self.token, "rank": self.rank,
                  "nonce": self.nonce, "since": time.time()}
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        try:
            honour_umask(fd)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _stale(self, path: Path, record: dict[str, Any]) -> bool:
        """No heartbeat for ``timeout`` seconds, or an owner on this host that has died."""
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.timeout:
            return True
        return record.get("host") == self.host and not _alive(int(record.get("pid", 0)))

    def _take_over(self, path: Path, record: dict[str, Any]) -> bool:
        """Rename the stale lease aside (one process wins the rename), check it is the one
        judged stale, then create this process's lease."""
        aside = path.with_name(f".stale-{self.nonce}-{path.name}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        moved = _read(aside)
        if moved is None or moved.get("nonce") != record.get("nonce") or \
                not self._stale(aside, moved):
            try:  # a lease renewed or re-created meanwhile: put it back
                os.link(aside, path)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        return self._create(path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _holder(record: dict[str, Any]) -> Holder:
    return Holder(str(record.get("host")), int(record.get("pid", 0)), str(record.get("launch")))


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
