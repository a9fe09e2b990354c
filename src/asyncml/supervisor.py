"""``asyncml up``: run the API and a worker as child processes and keep them running.

Children get their own session so a terminal's Ctrl-C reaches only the supervisor, which
then stops them in order with SIGTERM (Celery's warm shutdown: the running task finishes,
unacknowledged messages go back to the broker) and SIGKILL after a grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

_CRASH_WINDOW_S = 60.0
_MAX_CRASHES = 5


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    before_start: Callable[[], object] | None = None
    proc: subprocess.Popen[bytes] | None = None
    crashes: list[float] = field(default_factory=list)

    def start(self, env: Mapping[str, str]) -> None:
        if self.before_start is not None:
            self.before_start()
        self.proc = subprocess.Popen(  # noqa: S603  # our own argv: python -m asyncml ROLE
            list(self.argv), env=dict(env), start_new_session=True, preexec_fn=die_with_parent
        )
        log.info("started %s (pid %d)", self.name, self.proc.pid)


def die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies, even by SIGKILL, so no orphan
    keeps the API port or a worker slot (the supervisor's children; the API processes
    ``asyncml api`` spawns)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(
        self, children: Sequence[Child], *, env: Mapping[str, str], grace_s: float = 30.0
    ) -> None:
        self.children = list(children)
        self.env = env
        self.grace_s = grace_s
        self._stop = threading.Event()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()

    def run(self) -> int:
        """Start every child, restart one that dies, stop all on a signal; return exit code."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for child in self.children:
            child.start(self.env)
        code = 0
        while not self._stop.wait(0.5):  # a periodic check of children, not a sync point
            for child in self.children:
                if child.proc is None or child.proc.poll() is None:
                    continue
                now = time.monotonic()
                child.crashes = [t for t in child.crashes if now - t < _CRASH_WINDOW_S] + [now]
                log.error("%s exited with code %s", child.name, child.proc.returncode)
                if len(child.crashes) >= _MAX_CRASHES:
                    log.error("%s keeps crashing; stopping everything", child.name)
                    code = 1
                    self._stop.set()
                    break
                child.start(self.env)
        self.stop_all()
        return code

    def stop_all(self) -> None:
        # Workers first, so the API is still there to answer while they drain.
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", child.name, self.grace_s)
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
        log.info("all stopped")


def python_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "asyncml", *args]
