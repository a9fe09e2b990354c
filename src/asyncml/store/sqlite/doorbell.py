"""Wake-ups between the processes of one embedded engine: SQLite cannot notify.

Every process of ``asyncml up`` is on one host, so a writer that committed something others
wait for sends an empty datagram to each of them (``ring``) instead of each polling the
file. Two kinds of listener use it: a worker consuming a queue (``wake/<queue>/``, rung by
the publisher of a message, engine/embedded.py) and an API process with requests waiting
on tasks or their events (``wake/@tasks/``, rung by the store after a state change or an
event: ``TASKS`` below; queue names start with a letter, so they never meet it).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import select
import socket
import sys
import threading
from pathlib import Path

# Abstract socket names (Linux): no path in the data folder, whose length a Unix socket
# path could not hold (108 bytes), and nothing left behind by a process that died.
ABSTRACT = sys.platform.startswith("linux")
_BELL_PREFIX = b"\0asyncml-doorbell-"
DEFAULT_FALLBACK_POLL_S = 1.0
TASKS = "@tasks"  # the API's waiters: rung after a state change or an event is committed


def wake_dir(database: str | Path) -> Path:
    """``wake/<queue>/<token>``: one empty file per process consuming that queue."""
    return Path(database).parent / "wake"


class Doorbell:
    """How a publisher wakes the processes that consume a queue, on one host.

    The consuming process binds a datagram socket and, for each queue it consumes, puts an
    empty file named after the socket in ``wake/<queue>/``; a publisher, after its message
    is committed, sends an empty datagram to each socket named there (``ring``). A ring
    that arrives while the worker is busy waits in the socket until it next waits, so none
    is lost between a look at SQLite and the wait that follows. A file whose socket is gone
    (its process died) is removed by the first publisher that finds it so. Where abstract
    sockets do not exist (not Linux) nobody rings and the fallback poll does the work.
    """

    def __init__(self, wake: Path) -> None:
        self._wake = wake
        self.token = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._queues: set[str] = set()
        self._sock: socket.socket
        self._self_ring: socket.socket | None = None
        if ABSTRACT:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.bind(_BELL_PREFIX + self.token.encode())
        else:
            self._sock, self._self_ring = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._self_ring.setblocking(False)
        self._sock.setblocking(False)

    def listen(self, queue: str) -> None:
        """Ask to be rung for ``queue``; before the first look at it, so no ring is missed."""
        if not ABSTRACT or queue in self._queues:
            return
        folder = self._wake / queue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self.token).touch()
        self._queues.add(queue)

    def renew(self) -> None:
        """Put back a registration that went missing (a cleaned data folder): cheap enough
        for every fallback poll, and it ends the fallback-only state without a restart."""
        for queue in self._queues:
            path = self._wake / queue / self.token
            if not path.exists():
                with contextlib.suppress(OSError):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()

    def forget(self, queue: str) -> None:
        self._queues.discard(queue)
        with contextlib.suppress(OSError):
            (self._wake / queue / self.token).unlink()

    def ring_self(self) -> None:
        """Wake this process's own wait: its pool freed a slot, so it may fetch again."""
        try:
            if self._self_ring is not None:
                self._self_ring.send(b"")
            else:
                _sender().sendto(b"", _BELL_PREFIX + self.token.encode())
        except OSError:
            pass  # a full buffer: a wake-up is already waiting

    def wait(self, timeout_s: float) -> bool:
        """Block until rung or ``timeout_s``; True when rung. Every waiting ring is read."""
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout_s))
        if not readable:
            return False
        self.drain()
        return True

    def fileno(self) -> int:
        """For an event loop's reader (the API's watcher): readable once rung."""
        return self._sock.fileno()

    def drain(self) -> None:
        """Read every waiting ring: many rings before one look need only that look."""
        with contextlib.suppress(BlockingIOError):
            while True:
                self._sock.recv(16)

    def close(self) -> None:
        for queue in list(self._queues):
            self.forget(queue)
        self._sock.close()
        if self._self_ring is not None:
            self._self_ring.close()


_sender_lock = threading.Lock()
_sender_sock: tuple[int, socket.socket] | None = None


def _sender() -> socket.socket:
    """One unbound datagram socket per process (a forked child makes its own), closed when
    the process exits rather than left to the collector (a ResourceWarning)."""
    global _sender_sock
    with _sender_lock:
        if _sender_sock is None or _sender_sock[0] != os.getpid():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            atexit.register(sock.close)
            _sender_sock = (os.getpid(), sock)
        return _sender_sock[1]


def ring(wake: Path, queue: str) -> int:
    """Wake every process consuming ``queue``; returns how many were rung.

    Never raises: a ring is a hint, and the message is already committed.
    """
    if not ABSTRACT:
        return 0
    folder = wake / queue
    try:
        tokens = os.listdir(folder)
    except OSError:
        return 0  # nobody listens yet: a worker that starts looks at the queue first
    rung = 0
    for token in tokens:
        try:
            _sender().sendto(b"", _BELL_PREFIX + token.encode())
            rung += 1
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(OSError):
                (folder / token).unlink()  # its process is gone
        except OSError:
            rung += 1  # its buffer is full: it has a ring waiting already
    return rung
