"""Leases on units of work (a text stage, a job) shared by every launch of one run folder.

A unit is claimed by creating ``<run>/leases/<unit>.json`` atomically: a complete file is
hard-linked into place, which fails when a lease exists (on a file system without hard links
the file is created with ``O_EXCL``, then written). It records its owner (host, pid, launch
token, rank), a nonce drawn for this lease, and the owner's timeout and renewal interval.
While a process holds leases, a background thread renews each one's heartbeat (the file's
mtime) every ``timeout / 6`` seconds. A lease whose heartbeat is older than the timeout *it
records* (its owner's, whatever the reader's own), or whose owner is a dead process on this
host, is stale, and may be taken over.

Ending a lease (its owner releasing it, or another process taking it over) first creates its
*end marker* ``leases/.end-<nonce>`` with ``O_EXCL``: one process at most ends a given lease,
so a taker cannot remove a lease renewed or re-created meanwhile, nor race another taker.
The taker then reads the lease again (still the stale one?), renames its own lease over it
and reads it back. The owner gives a unit up (:meth:`Leases.owns` turns False and stays so)
once its lease has gone ``timeout / 2`` seconds without a renewal (the process was frozen,
or renewals failed, e.g. ``EIO``/``ESTALE`` on NFS, which the heartbeat survives and retries)
or another lease is found in its place: it gives up before any other process may take over.
The timeout is ``EMOPLUG_LEASE_TIMEOUT`` seconds (default 60).

What each process did with each unit goes to ``<run>/work.log`` (``work_log.py``).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoplug.errors import EmoplugError
from emoplug.files import honour_umask
from emoplug.train import work_log
from emoplug.train.signals import stops_deferred

TIMEOUT_ENV = "EMOPLUG_LEASE_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
#: heartbeats per timeout
RENEWALS = 6
#: the owner gives a lease up after this share of its timeout without a renewal
GIVE_UP = 0.5
#: ``os.link`` errors that mean the file system has no hard links
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


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


@dataclass
class _Lease:
    """A lease this process took: where, its nonce, when it was last renewed (monotonic
    clock) and, once given up, why."""

    path: Path
    nonce: str
    renewed: float
    lost: str | None = None


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
        self.held: dict[str, _Lease] = {}
        self.started: set[str] = set()  # units started here, not yet ended or abandoned
        self.taken_over: list[tuple[str, Holder]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._beat_at = time.monotonic()

    @property
    def give_up_after(self) -> float:
        return self.timeout * GIVE_UP

    def path(self, unit: str) -> Path:
        return self.root / f"{unit}.json"

    def take(self, unit: str) -> bool:
        """Claim ``unit``: True when this process now holds its lease (a fresh one, or one
        taken over from a stale owner); False while another live process holds it."""
        if not self.enabled:
            return True
        with stops_deferred():  # a stop between creating the file and holding it: after
            return self._take(unit)

    def _take(self, unit: str) -> bool:
        path, nonce, claimed = self.path(unit), uuid.uuid4().hex, time.monotonic()
        if self._create(path, nonce):
            return self._hold(unit, _Lease(path, nonce, claimed))
        found = _look(path)
        if found is None or not self._stale(*found):
            return False
        if not self._take_over(path, found[0], nonce):
            return False
        self.taken_over.append((unit, _holder(found[0])))
        return self._hold(unit, _Lease(path, nonce, claimed))

    def holder(self, unit: str) -> Holder | None:
        """The live owner of ``unit``'s lease, None when it is free or stale."""
        if not self.enabled:
            return None
        found = _look(self.path(unit))
        if found is None or self._stale(*found):
            return None
        return _holder(found[0])

    def owns(self, unit: str) -> bool:
        """Whether this process still holds ``unit``'s lease: renewed within the last
        ``timeout / 2`` seconds and still the lease in place. Once False, stays False."""
        if not self.enabled:
            return True
        lease = self.held.get(unit)
        if lease is None or lease.lost is not None:
            return False
        if not self._in_time(unit, lease, time.monotonic()):
            return False
        try:
            nonce = (_read(lease.path) or {}).get("nonce")
        except OSError as exc:
            self._lose(unit, lease, "unreadable", error=exc.errno)
            return False
        if nonce != lease.nonce:
            self._lose(unit, lease, "taken")
            return False
        return True

    def release(self, unit: str, why: str | None = None) -> None:
        """Drop this process's lease on ``unit``; a unit started and not ended here is noted
        as abandoned (``why``: the signal or error that stopped the work). A lease another
        process took over, or is taking over, stays."""
        with stops_deferred():  # a stop between forgetting the lease and removing it: after
            if unit in self.started:
                self.note("abandon", unit, why=why or "unfinished")
            with self._lock:
                lease = self.held.pop(unit, None)
            if lease is not None and self._mark_end(lease.nonce, self.timeout):
                try:
                    if (_read(lease.path) or {}).get("nonce") == lease.nonce:
                        lease.path.unlink(missing_ok=True)
                finally:
                    self._unmark_end(lease.nonce)

    def release_all(self, why: str | None = None) -> None:
        """Drop every lease this process holds and stop the heartbeat."""
        self._stop.set()
        with stops_deferred():  # every lease is released before a stop unwinds the rest
            for unit in list(self.held):
                self.release(unit, why)

    def note(self, event: str, unit: str, **details: object) -> None:
        """Append ``event`` (start, end, lost, discard, abandon) of ``unit`` by this process
        to ``work.log``."""
        if not self.enabled:
            return
        with self._lock:
            if event == "start":
                self.started.add(unit)
            elif event in ("end", "discard", "abandon"):
                self.started.discard(unit)
            work_log.append(self.root.parent, f"{self.host}:{self.pid}", self.token, self.rank,
                            event, unit, **details)

    def _hold(self, unit: str, lease: _Lease) -> bool:
        with self._lock:
            self.held[unit] = lease
            if self._beat is None:
                self._beat_at = time.monotonic()
                self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                              name="emoplug-leases")
                self._beat.start()
        return True

    def _heartbeat(self) -> None:
        """Renew every held lease each ``timeout / 6`` s; an error (ESTALE, EIO) is retried
        at the next beat, and a lease left unrenewed too long is given up."""
        while not self._stop.wait(self.timeout / RENEWALS):
            now = time.monotonic()
            with self._lock:
                leases = [(u, lease) for u, lease in self.held.items() if lease.lost is None]
            for unit, lease in leases:
                if not self._in_time(unit, lease, now):
                    continue
                try:
                    if (_read(lease.path) or {}).get("nonce") != lease.nonce:
                        self._lose(unit, lease, "taken")
                        continue
                    os.utime(lease.path)
                    lease.renewed = now
                except OSError as exc:  # transient on a shared file system: next beat
                    print(f"emoplug: lease {unit}: renewal failed ({exc}); retrying",
                          file=sys.stderr)
            self._beat_at = now

    def _in_time(self, unit: str, lease: _Lease, now: float) -> bool:
        """False (and the lease given up) once it went ``timeout / 2`` s unrenewed: the
        process was frozen (the heartbeat did not run) or renewals failed."""
        if now - lease.renewed < self.give_up_after:
            return True
        stalled = now - self._beat_at
        if stalled >= self.give_up_after:
            self._lose(unit, lease, "stalled", stalled_s=round(stalled, 1),
                       timeout_s=self.timeout)
        else:
            self._lose(unit, lease, "unrenewed", unrenewed_s=round(now - lease.renewed, 1))
        return False

    def _lose(self, unit: str, lease: _Lease, why: str, **details: object) -> None:
        with self._lock:
            if lease.lost is not None:
                return
            lease.lost = why
            self.note("lost", unit, why=why, **details)

    def _record(self, nonce: str) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "launch": self.token, "rank": self.rank,
                "nonce": nonce, "since": time.time(), "timeout": self.timeout,
                "renew_every": self.timeout / RENEWALS}

    def _complete_file(self, record: dict[str, Any]) -> str:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        honour_umask(fd)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        return tmp

    def _create(self, path: Path, nonce: str) -> bool:
        """Put a new lease at ``path`` unless one is there (False then)."""
        record = self._record(nonce)
        tmp = self._complete_file(record)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
        finally:
            os.unlink(tmp)
        return _create_exclusive(path, record)

    def _stale(self, record: dict[str, Any], st: os.stat_result) -> bool:
        """No heartbeat for the timeout the lease records (the reader's own for a lease
        that records none), or an owner on this host that has died."""
        if time.time() - st.st_mtime > _timeout_of(record, self.timeout):
            return True
        return record.get("host") == self.host and not _alive(int(record.get("pid", 0)))

    def _take_over(self, path: Path, record: dict[str, Any], nonce: str) -> bool:
        """End the stale lease ``record`` (its end marker makes this process the only one
        that may), check it is still in place and stale, rename this process's lease over
        it and check that it is the one in place."""
        old = record["nonce"]
        if not self._mark_end(old, _timeout_of(record, self.timeout)):
            return False
        try:
            found = _look(path)
            if found is None or found[0]["nonce"] != old or not self._stale(*found):
                return False  # released, renewed or replaced meanwhile
            os.replace(self._complete_file(self._record(nonce)), path)
            return (_read(path) or {}).get("nonce") == nonce
        finally:
            self._unmark_end(old)

    def _mark_end(self, nonce: str, timeout: float) -> bool:
        """Create the end marker of lease ``nonce``: True when this process is now the only
        one that may end that lease. A marker left by a process that died on this host, or
        older than ``timeout``, while ending it is broken first (once)."""
        marker = self.root / f".end-{nonce}"
        for attempt in range(2):
            if _create_exclusive(marker, {"host": self.host, "pid": self.pid,
                                          "nonce": uuid.uuid4().hex}):
                return True
            if attempt or not self._break_marker(marker, timeout):
                return False
        return False

    def _break_marker(self, marker: Path, timeout: float) -> bool:
        """Remove a stale end marker: rename it aside, check it is the one judged stale
        (else put it back)."""
        found = _look(marker)
        if found is None:
            return True
        record, st = found
        dead = record.get("host") == self.host and not _alive(int(record.get("pid", 0)))
        if not dead and time.time() - st.st_mtime <= timeout:
            return False
        aside = marker.with_name(f".broken-{uuid.uuid4().hex}")
        try:
            os.rename(marker, aside)
        except FileNotFoundError:
            return True
        moved = _look(aside)
        if moved is not None and moved[0]["nonce"] != record["nonce"]:
            try:  # another process's fresh marker: put it back
                os.link(aside, marker)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    def _unmark_end(self, nonce: str) -> None:
        (self.root / f".end-{nonce}").unlink(missing_ok=True)


def _create_exclusive(path: Path, record: dict[str, Any]) -> bool:
    """Create ``path`` with ``O_EXCL`` and write ``record``; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


def _read(path: Path) -> dict[str, Any] | None:
    """A lease or marker's record; None when it is missing or not (yet) complete JSON."""
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _look(path: Path) -> tuple[dict[str, Any], os.stat_result] | None:
    """A lease or marker's record and stat (read first: while this process holds the end
    marker of the lease read, the stat is that lease's), None when there is none. An
    unreadable one (being written, or damaged) is named by its inode."""
    record = _read(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    record = record or {}
    record.setdefault("nonce", f"unreadable-{st.st_ino}")
    return record, st


def _timeout_of(record: dict[str, Any], default: float) -> float:
    """The timeout a lease records (its owner's), ``default`` for one that records none."""
    try:
        return float(record["timeout"])
    except (KeyError, TypeError, ValueError):
        return default


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
