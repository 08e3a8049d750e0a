"""How ``emoplug run`` processes stop: SIGINT or SIGTERM unwinds the run (leases released, no
partial ``result.json``); a second SIGINT ends at once; the main process of ``--workers``
forwards the signal to the workers it started, and a worker whose parent died stops too."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

#: seconds the main process of ``--workers`` waits for stopped workers before killing them
GRACE_SECONDS = 10.0
PARENT_POLL_SECONDS = 0.5
#: how deep this process is in blocks that hold a stop back (:func:`stops_deferred`), and the
#: stop signal waiting for the outermost to end
_deferring = 0
_held_back: list[int] = []
#: the stop signal this process received, kept: Python swallows an exception raised while it
#: runs a ``__del__`` or a garbage-collector callback, so :func:`raise_if_stopped` raises it
#: again at the next batch or unit
_received: list[int] = []


class Stopped(BaseException):
    """The process was asked to stop (a BaseException: job error handling lets it through)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def stop_on_signals(children: list[subprocess.Popen] | None = None,
                    on_exit: Callable[[], None] | None = None) -> None:
    """Install this process's handlers (main thread only). The first SIGINT or SIGTERM sends
    SIGTERM to ``children`` and raises :class:`Stopped`; a second SIGINT kills the children,
    runs ``on_exit`` and exits at once (code 130); further SIGTERMs are ignored."""
    received = _received
    received.clear()

    def handle(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            for child in children or []:
                _send(child, signal.SIGTERM)
            if _deferring:
                _held_back.append(signum)
                return
            raise Stopped(signum)
        if signum == signal.SIGINT:
            for child in children or []:
                _send(child, signal.SIGKILL)
            if on_exit is not None:
                on_exit()
            os._exit(130)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def raise_if_stopped() -> None:
    """Raise :class:`Stopped` when this process was asked to stop: the run's loops call it
    between batches and between units, so a stop swallowed where Python ignores exceptions
    (the handler ran inside a ``__del__``) still stops the process."""
    if _received and not _deferring:
        raise Stopped(_received[0])


@contextmanager
def stops_deferred() -> Iterator[None]:
    """Hold a stop back while the block runs, and raise it when the block ends: for steps
    that must not be cut in two (a lease file created but not yet recorded as held would
    be left behind). Only the main thread runs signal handlers, so this is for it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _held_back:
            raise Stopped(_held_back.pop())


def stop_children(children: list[subprocess.Popen]) -> None:
    """SIGTERM every child still running, wait up to ``GRACE_SECONDS``, then SIGKILL."""
    for child in children:
        _send(child, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _send(child, signal.SIGKILL)
            child.wait()


def watch_parent(parent: int) -> None:
    """Stop this process (SIGTERM to itself) as soon as ``parent`` is no longer its parent:
    a worker whose main process was killed does not train on as an orphan."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="emoplug-parent").start()


def _send(child: subprocess.Popen, signum: int) -> None:
    if child.poll() is None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass
