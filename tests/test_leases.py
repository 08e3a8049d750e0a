"""Leases on units of work: exclusive, renewed, released, and taken over only when stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from emoplug.errors import EmoplugError
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
