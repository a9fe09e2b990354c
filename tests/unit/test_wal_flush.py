"""Syncing a WAL after its commit, once for every caller whose commit came before the sync."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from asyncml.errors import ServiceUnavailable
from asyncml.store import TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore, wal_flush
from asyncml.store.sqlite.wal_flush import WalFlush

_WAIT_S = 5.0


class _Disk:
    """Counts the syncs; the first one holds until released, as a slow disk would."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.syncs = 0
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.fail_first = fail_first

    def sync_file(self, _path: str) -> None:
        self.syncs += 1
        if self.syncs == 1:
            self.first_started.set()
            if not self.release_first.wait(_WAIT_S):
                raise AssertionError("the test never released the first sync")
            if self.fail_first:
                raise OSError(5, "Input/output error")


class _Callers:
    """Threads calling ``flush``, each one's outcome kept."""

    def __init__(self, flush: WalFlush) -> None:
        self.flush = flush
        self.threads: list[threading.Thread] = []
        self.errors: list[OSError] = []
        self.returned = 0

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._call)
            thread.start()
            self.threads.append(thread)

    def _call(self) -> None:
        try:
            self.flush.flush()
            self.returned += 1
        except OSError as exc:
            self.errors.append(exc)

    def wait_until_waiting(self, count: int) -> None:
        """Until ``count`` threads wait on the flush's condition: CPython keeps a
        Condition's waiting threads in ``_waiters``, so no sleep-and-hope."""
        deadline = time.monotonic() + _WAIT_S
        while len(getattr(self.flush._cond, "_waiters", ())) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} callers never waited for the running sync")
            time.sleep(0.005)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(_WAIT_S)
            if thread.is_alive():
                raise AssertionError("a caller of flush never returned")


def _flush(monkeypatch: pytest.MonkeyPatch, disk: _Disk, tmp_path: Path) -> WalFlush:
    monkeypatch.setattr(wal_flush, "sync_file", disk.sync_file)
    return WalFlush(tmp_path / "tasks.sqlite3")


def test_callers_arriving_during_a_sync_share_the_next_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    disk = _Disk()
    callers = _Callers(_flush(monkeypatch, disk, tmp_path))
    callers.start()
    assert disk.first_started.wait(_WAIT_S)
    # Their commits came after the running sync began: it does not cover them.
    callers.start(5)
    callers.wait_until_waiting(5)
    disk.release_first.set()
    callers.join()
    assert (callers.returned, callers.errors) == (6, [])
    assert disk.syncs == 2  # the first caller's, then one for the five others


def test_a_failed_sync_fails_its_waiters_and_every_later_flush(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Linux reports a write-back error once and may drop the pages: no later sync could
    # vouch for the commits the failed one was to cover.
    disk = _Disk(fail_first=True)
    flush = _flush(monkeypatch, disk, tmp_path)
    callers = _Callers(flush)
    callers.start()
    assert disk.first_started.wait(_WAIT_S)
    callers.start(2)
    callers.wait_until_waiting(2)
    disk.release_first.set()
    callers.join()
    assert (callers.returned, len(callers.errors)) == (0, 3)
    with pytest.raises(OSError, match="Input/output error"):
        flush.flush()
    assert disk.syncs == 1


def test_a_real_wal_is_synced_and_a_checkpointed_one_is_nothing_to_sync(tmp_path: Path) -> None:
    database = tmp_path / "tasks.sqlite3"
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert (tmp_path / "tasks.sqlite3-wal").exists()
    WalFlush(database).flush()
    conn.close()  # the last connection checkpoints and removes the -wal file
    assert not (tmp_path / "tasks.sqlite3-wal").exists()
    WalFlush(database).flush()


def test_a_submission_whose_sync_failed_leaves_no_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Its commit was visible before the failed sync; no id was answered, so none may stay.
    store = SqliteTaskStore(tmp_path / "tasks.sqlite3", ttl_s=60)
    try:

        def failing(_path: str) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(wal_flush, "sync_file", failing)
        record = TaskRecord(
            id="t1", kind="audio.length", status=TaskStatus.QUEUED, submitted_at=utcnow()
        )
        with pytest.raises(ServiceUnavailable, match="could not sync"):
            store.create(record)
        assert store.get("t1") is None
    finally:
        store.close()
