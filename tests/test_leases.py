"""Leases on units of work: exclusive, renewed, released, and taken over only when stale."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from emoplug.errors import EmoplugError
from emoplug.train import work_log
from emoplug.train.leases import Leases, lease_timeout


def test_a_live_lease_is_exclusive_and_names_its_owner(tmp_path):
    first, second = Leases(tmp_path, "aaa", 0), Leases(tmp_path, "bbb", 0)
    assert first.take("job1")
    assert not second.take("job1")  # today's claims let a second launch take it too
    holder = second.holder("job1")
    assert holder is not None and holder.token == "aaa" and holder.pid == os.getpid()
    record = json.loads((tmp_path / "leases" / "job1.json").read_text())
    assert {"host", "pid", "launch", "rank", "nonce"} <= set(record)
    first.release("job1")
    assert not (tmp_path / "leases" / "job1.json").exists()
    assert second.take("job1") and second.holder("job1").token == "bbb"
    second.release_all()


def test_the_heartbeat_keeps_a_lease_alive(tmp_path):
    owner, other = Leases(tmp_path, "aaa", 0, timeout=0.6), Leases(tmp_path, "bbb", 0,
                                                                      timeout=0.6)
    assert owner.take("job1")
    time.sleep(1.5)  # longer than the timeout: only the heartbeat keeps it fresh
    assert not other.take("job1") and other.holder("job1") is not None
    owner.release_all()


def test_a_lease_without_heartbeat_is_taken_over_once(tmp_path):
    owner = Leases(tmp_path, "aaa", 0, timeout=1.0)
    assert owner.take("job1")
    owner._stop.set()  # the owner hangs: no more heartbeats
    path = tmp_path / "leases" / "job1.json"
    old = time.time() - 5
    os.utime(path, (old, old))
    takers = [Leases(tmp_path, t, 0, timeout=1.0) for t in ("bbb", "ccc")]
    won = [t.take("job1") for t in takers]
    assert won == [True, False]  # one taker wins; the other sees a fresh lease
    assert takers[0].taken_over[0][0] == "job1"
    assert json.loads(path.read_text())["launch"] == "bbb"
    assert not owner.owns("job1") and takers[0].owns("job1")  # the old owner writes nothing
    owner.release("job1")  # the old owner's release leaves the new owner's lease alone
    assert path.exists()
    takers[0].release_all()


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    code = ("import sys; from pathlib import Path; from emoplug.train.leases import Leases; "
            "Leases(Path(sys.argv[1]), 'dead', 0).take('job1')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    record = json.loads((tmp_path / "leases" / "job1.json").read_text())
    assert record["launch"] == "dead"  # left behind, as by a kill -9
    taker = Leases(tmp_path, "new", 0)  # the default timeout (60 s) has not passed
    assert taker.holder("job1") is None and taker.take("job1")
    taker.release_all()


def test_the_lease_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EMOPLUG_LEASE_TIMEOUT", "15")
    assert lease_timeout() == 15.0
    monkeypatch.setenv("EMOPLUG_LEASE_TIMEOUT", "soon")
    with pytest.raises(EmoplugError, match="EMOPLUG_LEASE_TIMEOUT='soon'"):
        lease_timeout()


def test_staleness_is_judged_by_the_owners_recorded_timeout(tmp_path):
    """A reader with a shorter timeout does not take a live lease of an owner with a longer
    one (today: it did), and one with a longer timeout does take a stale short-lived one."""
    patient = Leases(tmp_path, "aaa", 0, timeout=60.0)
    assert patient.take("job1")
    old = time.time() - 5  # five seconds since the last heartbeat: live for its owner
    os.utime(tmp_path / "leases" / "job1.json", (old, old))
    hasty = Leases(tmp_path, "bbb", 0, timeout=3.0)
    assert hasty.holder("job1") is not None and not hasty.take("job1")
    assert patient.owns("job1")
    record = json.loads((tmp_path / "leases" / "job1.json").read_text())
    assert record["timeout"] == 60.0 and record["renew_every"] == 10.0

    brief = Leases(tmp_path, "ccc", 0, timeout=1.0)
    assert brief.take("job2")
    brief._stop.set()  # hangs: its lease is stale after its own 1 s
    os.utime(tmp_path / "leases" / "job2.json", (old, old))
    assert Leases(tmp_path, "ddd", 0, timeout=60.0).take("job2")
    patient.release_all()


def test_the_heartbeat_survives_transient_errors(tmp_path, monkeypatch):
    """An ESTALE while renewing is retried at the next beat (today it ended the heartbeat,
    and the lease went stale while its owner worked on)."""
    real, failures = os.utime, []

    def flaky(path, *args, **kwargs):
        if not failures:
            failures.append(path)
            raise OSError(errno.ESTALE, "Stale file handle")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", flaky)
    owner = Leases(tmp_path, "aaa", 0, timeout=1.2)
    assert owner.take("job1")
    time.sleep(2.5)  # twice the timeout: only renewals after the error keep it fresh
    assert failures and owner._beat.is_alive()
    assert not Leases(tmp_path, "bbb", 0, timeout=1.2).take("job1")
    assert owner.owns("job1")
    owner.release_all()


def test_an_owner_that_cannot_renew_gives_the_unit_up_before_it_can_be_taken(tmp_path,
                                                                            monkeypatch):
    def broken(path, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "utime", broken)
    owner = Leases(tmp_path, "aaa", 0, timeout=2.0)
    assert owner.take("job1")
    path = tmp_path / "leases" / "job1.json"
    deadline = time.time() + 5
    while owner.owns("job1") and time.time() < deadline:
        time.sleep(0.02)
    age = time.time() - path.stat().st_mtime
    assert not owner.owns("job1") and age < 2.0  # given up before any taker may take it
    lost = [e for e in work_log.read(tmp_path) if e.event == "lost"]
    assert [(e.unit, e.details["why"]) for e in lost] == [("job1", "unrenewed")]
    owner.release("job1")  # nobody took it over: the lease goes, the unit is free again
    assert not path.exists()


def test_a_takeover_race_leaves_one_owner(tmp_path, monkeypatch):
    """B judges a lease stale, A takes it over first, and a third process tries to claim
    the unit whenever a lease is renamed: exactly one process believes it holds the unit
    (today B moved A's lease aside and two fresh claimers won)."""
    owner = Leases(tmp_path, "old", 0, timeout=1.0)
    assert owner.take("job1")
    owner._stop.set()
    old = time.time() - 5
    os.utime(tmp_path / "leases" / "job1.json", (old, old))
    a, b = Leases(tmp_path, "aaa", 0, timeout=1.0), Leases(tmp_path, "bbb", 0, timeout=1.0)
    winners: list[str] = []
    real_stale = b._stale

    def b_judges_then_a_takes(*args):
        stale = real_stale(*args)
        if a.take("job1"):
            winners.append("a")
        return stale

    monkeypatch.setattr(b, "_stale", b_judges_then_a_takes)
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def renamed(src, dst, *args, _real=real, **kwargs):
            _real(src, dst, *args, **kwargs)
            third = Leases(tmp_path, f"c{len(winners)}", 0, timeout=1.0)
            if third.take("job1"):
                winners.append("third")

        monkeypatch.setattr(os, name, renamed)
    if b.take("job1"):
        winners.append("b")
    monkeypatch.undo()
    assert winners == ["a"], winners
    assert a.owns("job1") and not b.owns("job1")
    a.release_all()


def test_a_frozen_owner_gives_its_unit_up_and_says_why(tmp_path):
    """An owner frozen (SIGSTOP) for longer than half its timeout stops claiming the unit
    when it wakes, even where nobody took it, and work.log says it stalled."""
    code = ("import sys; from pathlib import Path; from emoplug.train.leases import Leases; "
            "leases = Leases(Path(sys.argv[1]), 'frozen', 0, timeout=2.0); "
            "leases.take('job1'); print('ready', flush=True); sys.stdin.readline(); "
            "print(leases.owns('job1'), flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGSTOP)
    time.sleep(1.6)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate("go\n", timeout=30)
    assert out.strip() == "False"
    lost = [e for e in work_log.read(tmp_path) if e.event == "lost"]
    assert len(lost) == 1 and lost[0].details["why"] == "stalled"
    assert float(lost[0].details["stalled_s"]) >= 1.0


def test_leases_work_without_hard_links(tmp_path, monkeypatch):
    """On a file system without hard links the lease is created with O_EXCL instead."""
    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    first, second = Leases(tmp_path, "aaa", 0), Leases(tmp_path, "bbb", 0)
    assert first.take("job1") and not second.take("job1")
    assert json.loads((tmp_path / "leases" / "job1.json").read_text())["launch"] == "aaa"
    first.release_all()
    assert not (tmp_path / "leases" / "job1.json").exists()


def _events(lines: str) -> list[work_log.WorkEvent]:
    return [work_log.WorkEvent(f.split()[0], "t", f.split()[1], f.split()[2],
                               dict(kv.split("=") for kv in f.split()[3:]))
            for f in lines.strip().splitlines()]


@pytest.mark.parametrize("lines, twice", [
    ("h:1 start u\nh:1 end u result=done", False),
    ("h:1 start u\nh:2 start u\nh:1 end u result=done\nh:2 end u result=done", True),
    ("h:1 start u\nh:1 end u result=done\nh:2 start u\nh:2 end u result=done", True),
    ("h:1 start u\nh:1 end u result=failed\nh:2 start u\nh:2 end u result=done", False),
    ("h:1 start u\nh:1 abandon u why=SIGTERM\nh:2 start u\nh:2 end u result=done", False),
    ("h:9 start u\nh:2 start u\nh:2 end u result=done", False),  # h:9 was killed
    ("h:1 start u\nh:2 start u\nh:1 lost u why=stalled stalled_s=7.0 timeout_s=5.0\n"
     "h:1 discard u\nh:2 end u result=done", False),
    ("h:1 start u\nh:2 start u\nh:1 lost u why=stalled stalled_s=3.0 timeout_s=5.0\n"
     "h:1 discard u\nh:2 end u result=done", True),
    ("h:1 start u\nh:1 lost u why=unrenewed\nh:1 discard u\nh:2 start u\n"
     "h:2 end u result=done", True),
])
def test_work_log_audit_counts_units_started_twice(lines, twice):
    found = work_log.audit(_events(lines), alive=lambda process: process != "h:9")
    assert (found.started_twice == {"u"}) is twice
    assert (found.discarded == {"u"}) is ("discard" in lines)


def test_a_takeover_left_half_done_by_a_dead_taker_is_finished_by_the_next(tmp_path):
    """A taker that died holding a stale lease's end marker does not block the unit: the
    marker of a dead process is broken and the lease taken over; a live taker's marker is
    respected (no second taker)."""
    owner = Leases(tmp_path, "old", 0, timeout=3.0)
    assert owner.take("job1")
    owner._stop.set()
    path = tmp_path / "leases" / "job1.json"
    old = time.time() - 10
    os.utime(path, (old, old))
    nonce = json.loads(path.read_text())["nonce"]
    marker = tmp_path / "leases" / f".end-{nonce}"
    marker.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                  "nonce": "live"}))
    assert not Leases(tmp_path, "bbb", 0, timeout=3.0).take("job1")  # its taker is alive
    code = ("import json, os, socket, sys; print(json.dumps({'host': socket.gethostname(), "
            "'pid': os.getpid(), 'nonce': 'dead'}))")
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout
    marker.write_text(dead)  # the taker died between its marker and its rename
    taker = Leases(tmp_path, "ccc", 0, timeout=3.0)
    assert taker.take("job1") and taker.owns("job1")
    assert not marker.exists()
    taker.release_all()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point
def test_a_stop_swallowed_inside_a_destructor_is_raised_at_the_next_check():
    """Python ignores an exception raised while it runs a ``__del__`` (a signal handler can
    land there); the stop is kept and raised again at the next batch or unit."""
    import gc
    import os
    import signal

    from emoplug.train import signals

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signals.stop_on_signals()
    try:
        class Finalised:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)  # the handler raises in here: ignored
                for _ in range(1000):  # let the interpreter run the handler inside __del__
                    pass

        Finalised()
        gc.collect()
        with signals.stops_deferred():
            signals.raise_if_stopped()  # held back inside a step that must not be cut
        with pytest.raises(signals.Stopped, match="SIGTERM"):
            signals.raise_if_stopped()
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        signals._received.clear()
