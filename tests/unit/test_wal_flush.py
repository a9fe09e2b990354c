"""Syncing a WAL after its commit, once for every caller whose commit came before the sync."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from asyncml.store.sqlite import wal_flush
from asyncml.store.sqlite.wal_flush import WalFlush


class _Disk:
    """Counts the syncs; the first one holds until released, as a slow disk would."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.syncs = 0
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.fail_first = fail_first

    def fdatasync(self, _path: str) -> None:
        self.syncs += 1
        if self.syncs == 1:
            self.first_started.set()
            self.release_first.wait(5)
            if self.fail_first:
                raise OSError(5, "Input/output error")


def _in_thread(flush: WalFlush, errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            flush.flush()
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_until_waiting(flush: WalFlush, callers: int) -> None:
    """Until `callers` threads wait on the flush's condition (the sync under way holds)."""
    deadline = time.monotonic() + 5
    # CPython keeps a Condition's waiting threads in `_waiters`: no sleep-and-hope.
    while len(getattr(flush._cond, "_waiters", ())) < callers:
        assert time.monotonic() < deadline, "the callers never waited"
        time.sleep(0.005)


def test_callers_arriving_during_a_sync_share_the_next_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    disk = _Disk()
    monkeypatch.setattr(wal_flush, "_fdatasync", disk.fdatasync)
    flush = WalFlush(tmp_path / "tasks.sqlite3")
    errors: list[BaseException] = []
    first = _in_thread(flush, errors)
    assert disk.first_started.wait(5)
    # Their commits came after the running sync began: it does not cover them.
    later = [_in_thread(flush, errors) for _ in range(5)]
    _wait_until_waiting(flush, 5)
    disk.release_first.set()
    for thread in [first, *later]:
        thread.join(5)
    assert errors == []
    assert disk.syncs == 2  # the first caller's, then one for the five others


def test_a_caller_is_told_when_the_sync_that_was_to_cover_it_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    disk = _Disk(fail_first=True)
    monkeypatch.setattr(wal_flush, "_fdatasync", disk.fdatasync)
    flush = WalFlush(tmp_path / "tasks.sqlite3")
    errors: list[BaseException] = []
    first = _in_thread(flush, errors)
    assert disk.first_started.wait(5)
    disk.release_first.set()
    first.join(5)
    assert [type(e) for e in errors] == [OSError]
    flush.flush()  # the next caller gets a sync of its own, which succeeds
    assert disk.syncs == 2


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
