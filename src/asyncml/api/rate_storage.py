"""The rate limit's counters in one SQLite file, shared by every API process of a data folder.

``limits`` keeps its counters in memory unless given a server; with more than one API
process on the embedded engine, each key would then get its rate once per process. This
storage keeps them in ``rates.sqlite3`` next to the task store, with the semantics of the
library's own ``MemoryStorage`` (which its sliding window counter strategy is written
against): a counter's expiry is set when it is first incremented, an expired counter
reads as absent.

Counters are not worth a sync at every commit: in WAL mode ``synchronous=NORMAL`` syncs
only at checkpoints (every thousand pages or so), and a power cut forgets the last counts,
which only lets a few more requests through. Not ``OFF``: a checkpoint without syncs can
leave the file damaged after a power cut, and a damaged file would lift the rate limit
(the gate lets requests through when its storage fails) until someone deleted it.

Every call is one short transaction in one worker thread, and a read-then-write takes the
write lock first (``BEGIN IMMEDIATE``), so two processes never lose an increment nor both
take the last entry of a window.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from math import floor
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
from limits.aio.storage import SlidingWindowCounterSupport, Storage
from limits.storage.base import TimestampedSlidingWindow

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
PURGE_EVERY_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID
"""


class SqliteRateStorage(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """An async ``limits`` storage for the sliding window counter (and the fixed window).

    The connection is opened on first use, in whichever worker thread gets there first,
    so it is shared across threads under a lock (``check_same_thread=False``).
    """

    # Not registered under a scheme: limits' storage_from_string would call the class with a
    # URI string, and this one is only ever built from a path.
    STORAGE_SCHEME = None

    def __init__(self, path: Path, *, wrap_exceptions: bool = False) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._one_thread = anyio.CapacityLimiter(1)
        self._purge_at = -float("inf")  # the first write purges what earlier runs left
        super().__init__(None, wrap_exceptions=wrap_exceptions)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- the Storage contract ------------------------------------------------------------

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with self._writing(conn) as now:
                return _add(conn, key, expiry, amount, now)

        return await self._run(work)

    async def get(self, key: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count FROM counters WHERE key = ? AND expires_at > ?", (key, time.time())
            ).fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(work)

    async def get_expiry(self, key: str) -> float:
        def work(conn: sqlite3.Connection) -> float:
            now = time.time()
            row = conn.execute(
                "SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            return now if row is None else float(row[0])

        return await self._run(work)

    async def clear(self, key: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM counters WHERE key = ?", (key,))

        await self._run(work)

    async def reset(self) -> int | None:
        """Every counter goes; the number of live ones is returned (MemoryStorage counts what
        it holds, expired or not until its timer has run: here an expired row is absent)."""

        def work(conn: sqlite3.Connection) -> int:
            with self._writing(conn) as now:
                live = conn.execute("DELETE FROM counters WHERE expires_at > ?", (now,)).rowcount
                conn.execute("DELETE FROM counters")
                return live

        return await self._run(work)

    async def check(self) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("SELECT 1 FROM counters LIMIT 1").fetchall()
            return True

        try:
            return await self._run(work)
        except sqlite3.Error:
            return False

    # --- the sliding window counter ------------------------------------------------------

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        """MemoryStorage's check-then-increment, in one transaction: it re-checks after the
        increment and takes it back if another hit won the race, which cannot happen here."""
        if amount > limit:
            return False

        def work(conn: sqlite3.Connection) -> bool:
            with self._writing(conn) as now:
                previous_key, current_key = self.sliding_window_keys(key, expiry, now)
                counts = _live_counts(conn, previous_key, current_key, now)
                previous, previous_ttl, current, _ = _window(*counts, expiry, now)
                if floor(previous * previous_ttl / expiry + current) + amount > limit:
                    return False
                # A new current window's counter lives two windows: it is the previous one next.
                _add(conn, current_key, 2 * expiry, amount, now)
                return True

        return await self._run(work)

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        def work(conn: sqlite3.Connection) -> tuple[int, float, int, float]:
            now = time.time()
            previous_key, current_key = self.sliding_window_keys(key, expiry, now)
            return _window(*_live_counts(conn, previous_key, current_key, now), expiry, now)

        return await self._run(work)

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        previous_key, current_key = self.sliding_window_keys(key, expiry, time.time())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM counters WHERE key IN (?, ?)", (previous_key, current_key))

        await self._run(work)

    # --- plumbing ------------------------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """One worker thread hop per call: SQLite blocks (up to the busy timeout while the
        other process writes), and the event loop must not. One thread at a time: the calls
        take turns on the connection anyway, and a flood of requests waiting for their turn
        in threads would hold the threads the task store's calls need."""
        return await anyio.to_thread.run_sync(self._locked, work, limiter=self._one_thread)

    def _locked(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return work(self._connection())

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # transactions are begun explicitly
                check_same_thread=False,
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
            except BaseException:
                conn.close()  # the next call tries again from scratch
                raise
            self._conn = conn
        return self._conn

    @contextmanager
    def _writing(self, conn: sqlite3.Connection) -> Iterator[float]:
        """A write transaction, and the time to count at: read once the lock is held, not
        before waiting for it. Now and then it also drops the counters that expired."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            if now >= self._purge_at:
                conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
                self._purge_at = now + PURGE_EVERY_S
            yield now
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _live_counts(
    conn: sqlite3.Connection, previous_key: str, current_key: str, now: float
) -> tuple[int, int]:
    """The two windows' counters, read in one statement (one snapshot); an expired counter
    is absent, as in MemoryStorage."""
    rows = conn.execute(
        "SELECT key, count FROM counters WHERE key IN (?, ?) AND expires_at > ?",
        (previous_key, current_key, now),
    )
    counts = {str(key): int(count) for key, count in rows}
    return counts.get(previous_key, 0), counts.get(current_key, 0)


def _add(conn: sqlite3.Connection, key: str, expiry: float, amount: int, now: float) -> int:
    """MemoryStorage.incr: the expiry is set when the count starts (from zero or absent)."""
    row = conn.execute(
        "SELECT count, expires_at FROM counters WHERE key = ? AND expires_at > ?", (key, now)
    ).fetchone()
    count, expires_at = (0, now) if row is None else (int(row[0]), float(row[1]))
    count += amount
    if count == amount:
        expires_at = now + expiry
    conn.execute(
        "INSERT OR REPLACE INTO counters (key, count, expires_at) VALUES (?, ?, ?)",
        (key, count, expires_at),
    )
    return count


def _window(
    previous_count: int, current_count: int, expiry: int, now: float
) -> tuple[int, float, int, float]:
    """MemoryStorage._get_sliding_window_info: the windows' counts and times to live."""
    previous_ttl = 0.0 if previous_count == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
    current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
    return previous_count, previous_ttl, current_count, current_ttl
