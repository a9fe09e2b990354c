"""Syncing a WAL file after its commit, outside the file's write turn, once for many commits.

With ``synchronous=FULL`` SQLite syncs the WAL inside each commit (~4 ms of fsync on this
kind of disk), while the committer holds the file's write turn: every other writer of the
file (the API's submissions, each worker's fetches and state changes) waited out each
sync. Here a commit that must outlive a power cut is made with ``synchronous=NORMAL`` (its
WAL frames are written, not synced) and followed by ``WalFlush.flush`` once the turn is let
go: an ``fdatasync`` of the ``-wal`` file, which puts every frame committed before it on
disk. While one sync runs, the callers that arrive wait for the next one, which covers
them all (group commit).

Why this is as durable as FULL for those commits: in WAL mode a commit is on disk once its
frames are (recovery replays every frame up to the last valid commit), and SQLite itself
syncs the database file after each checkpoint and the WAL's header when it starts reusing
the file, at any ``synchronous`` but OFF. A ``-wal`` file that is gone was checkpointed
into the (synced) database and removed by the last connection to close.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class WalFlush:
    """One per database file and process; thread-safe."""

    def __init__(self, database: str | Path) -> None:
        self.wal = f"{database}-wal"
        self._cond = threading.Condition()
        self._started = 0  # syncs begun
        self._done = 0  # the newest sync finished (they run one at a time, in order)
        self._running = False
        self._error: OSError | None = None  # the newest sync's failure, if it failed

    def flush(self) -> None:
        """Return once every frame committed before this call is on disk; raise OSError if
        the sync that was to cover them failed."""
        with self._cond:
            ticket = self._started + 1  # a sync begun from now on covers this caller
            while True:
                if self._done >= ticket:  # a sync begun after this caller's commit ended
                    if self._error is not None:
                        raise self._error
                    return
                if not self._running:
                    break
                self._cond.wait()
            self._running = True
            self._started += 1
            mine = self._started
        error: OSError | None = None
        try:
            _fdatasync(self.wal)
        except OSError as exc:
            error = exc
        with self._cond:
            self._running = False
            self._done = mine
            self._error = error
            self._cond.notify_all()
        if error is not None:
            raise error


def _fdatasync(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # checkpointed into the database and removed (see the module's docstring)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
