"""Writers of one SQLite file taking turns on a lock file, woken in turn by the kernel.

A process that finds SQLite's write lock taken sleeps in SQLite's busy handler 1, 2, 5,
10, 15, 20, 25 ... ms between tries: long after the holder's commit ended (~4 ms with its
fsync here), and it may lose the lock again to a newcomer. Under load the embedded
engine's processes (the API's submissions, each worker's fetches and state changes) spent
more time asleep there than writing. Waiting on ``flock`` of a file beside the database
instead, a writer is woken the moment the previous one lets go. A writer that does not
take turns (a CLI command, a rare write) stays safe: SQLite's own lock still decides.

``schema_lock`` is the other lock file beside a database: the processes of ``asyncml up``
open a fresh data folder at once, and one at a time creates or upgrades its tables.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Turns:
    """One open file per thread and process: a lock held through an open file does not
    exclude another thread using that same open file, and a forked child opens its own."""

    def __init__(self, database: str | Path) -> None:
        self.path = f"{database}.turn"
        self._local = threading.local()

    @contextmanager
    def taken(self) -> Iterator[None]:
        fd: int | None = getattr(self._local, "fd", None)
        if fd is None or getattr(self._local, "pid", None) != os.getpid():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._local.fd, self._local.pid = fd, os.getpid()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """This thread's file (others close with their process)."""
        fd: int | None = getattr(self._local, "fd", None)
        if fd is not None and getattr(self._local, "pid", None) == os.getpid():
            os.close(fd)
        self._local.fd = None


@contextmanager
def schema_lock(database: str | Path) -> Iterator[None]:
    """One process at a time creates or upgrades ``database``'s tables (the task store's,
    the broker's): SQLite's own locks made the others fail with "database is locked",
    "table already exists" or "duplicate column name". A lock file beside the database
    holds across processes, where a lock inside one process would not."""
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
