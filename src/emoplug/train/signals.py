"""How ``emoplug run`` processes stop: SIGINT or SIGTERM unwinds the run (leases released, no
partial ``result.json``); a second SIGINT ends at once; the main process of ``--workers``
forwards the signal to the workers it started, and a worker whose parent died stops too."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from types import FrameType

#: seconds the main process of ``--workers`` waits for stopped workers before killing them
GRACE_SECONDS = 10.0
PARENT_POLL_SECONDS = 0.5


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
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            for child in children or []:
                _send(child, signal.SIGTERM)
            raise Stopped(signum)
        if signum == signal.SIGINT:
            for child in children or []:
                _send(child, signal.SIGKILL)
            if on_exit is not None:
                on_exit()
            os._exit(130)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


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
