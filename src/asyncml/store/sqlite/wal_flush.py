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

What it gives up: a commit is visible to other connections before it is on disk, where
FULL made it visible only once synced. A failed sync is therefore final for the process
(as PostgreSQL treats one): Linux reports a write-back error once and may drop the pages,
so no later sync can vouch for what came before, and every later ``flush`` raises it too.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

# macOS has no fdatasync; its fsync is what SQLite's own sync uses there too.
_datasync = getattr(os, "fdatasync", os.fsync)


class WalFlush:
    """One per database file and process (a forked child makes its own); thread-safe."""

    def __init__(self, database: str | Path) -> None:
        self.wal = f"{database}-wal"
        self._cond = threading.Condition()
        self._started = 0  # syncs begun
        self._done = 0  # the newest sync finished (they run one at a time, in order)
        self._running = False
        self._failed: OSError | None = None  # the first failed sync's error, for good

    def flush(self) -> None:
        """Return once every frame committed before this call is on disk; raise OSError if
        a sync of this file ever failed in this process."""
        with self._cond:
            ticket = self._started + 1  # a sync begun from now on covers this caller
            while True:
                if self._failed is not None:
                    raise self._failed
                if self._done >= ticket:  # a sync begun after this caller's commit ended
                    return
                if not self._running:
                    break
                self._cond.wait()
            self._running = True
            self._started += 1
            mine = self._started
        try:
            sync_file(self.wal)
        except OSError as exc:
            with self._cond:
                self._failed = exc
            raise
        finally:
            with self._cond:
                self._running = False
                self._done = mine
                self._cond.notify_all()


def sync_file(path: str) -> None:
    """Put what was written to ``path`` on disk; a file that is gone has nothing to sync
    (a ``-wal`` file is removed once checkpointed: see the module's docstring)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        _datasync(fd)
    finally:
        os.close(fd)
