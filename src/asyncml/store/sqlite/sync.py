"""The sync side of the embedded store (workers, CLI, and the API through ``aio``).

WAL mode lets the API read while a worker writes; every state change is a single
``UPDATE ... WHERE status IN (...)`` so the compare-and-set is atomic across processes.

What must outlive a power cut is synced: an accepted task (``create``: on disk before its
id is answered) and a cancel (its caller was told). Their commits write the WAL without
syncing it, and the WAL is synced once the file's write turn is let go (``WalFlush``: ~4
ms of fdatasync on this kind of disk, which the other writers no longer wait out, and one
for every commit made before it). Any other write (a key, a dead letter) is synced inside
its commit (the connections' ``synchronous=FULL``). What a power cut may take back is not
synced at all (``_write(synced=False)``): a start, an outcome, an event, a heartbeat.
Such a task is not lost: its broker message is never deleted before the task is final on
disk (a fetch only hides it: engine/embedded_upkeep.py), so the next ``asyncml up`` finds
the task unfinished and runs it again, as after a worker kill. A process crash takes back
nothing: a WAL commit is in the file once committed. After a commit others wait for, the
store rings the API's watchers (``doorbell.TASKS``).

The writes of every task (create, start, finish) and its events take turns
(``turns.Turns``) before SQLite's own write lock, so that no writer sleeps in SQLite's
busy handler.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncml.errors import ServiceUnavailable
from asyncml.records import ApiKey, Delivery, ErrorBody, TaskPage, TaskRecord, TaskStatus
from asyncml.store.base import Cancelled, FailedDelivery, failed_delivery
from asyncml.store.dead_letters import DEAD_LETTER_TTL_S, DeadLetter
from asyncml.store.durability import StoreDurability
from asyncml.store.sqlite.doorbell import TASKS, ring, wake_dir
from asyncml.store.sqlite.events import EventsMixin
from asyncml.store.sqlite.history import HISTORY_INDEXES, HistoryMixin
from asyncml.store.sqlite.schema import (
    ADDED_COLUMNS,
    COLUMNS,
    INDEXES,
    SCHEMA,
    TRIGGERS,
    row_to_record,
    rowid_from,
)
from asyncml.store.sqlite.turns import Turns, schema_lock
from asyncml.store.sqlite.wal_flush import WalFlush, sync_file

log = logging.getLogger(__name__)

_PURGE_EVERY = 500  # finishes between two purges of expired records
_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
_JOINED_COLUMNS = ", ".join(f"t.{name.strip()}" for name in COLUMNS.split(","))


class SqliteTaskStore(EventsMixin, HistoryMixin):
    """One connection per thread and process: sqlite3 connections must not cross either."""

    def __init__(self, path: Path, *, ttl_s: int) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self._local = threading.local()
        self._finishes = 0
        self.wake = wake_dir(path)
        self._turns = Turns(path)
        self._wal = WalFlush(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with schema_lock(path), self._conn() as conn:
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
            for name, ddl in ADDED_COLUMNS.items():  # data folders of earlier versions
                if name not in columns:
                    conn.execute(f"ALTER TABLE tasks ADD COLUMN {name} {ddl}")
            conn.executescript(INDEXES)
            conn.executescript(HISTORY_INDEXES)
            conn.executescript(TRIGGERS)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a task the API accepted is on disk before its id is answered, even
                # across a power cut (NORMAL in WAL mode could lose the last commits).
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise ServiceUnavailable(f"embedded task store unavailable: {exc}") from exc
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._conn().execute(sql, params)
        except sqlite3.Error as exc:
            raise ServiceUnavailable(f"embedded task store unavailable: {exc}") from exc

    def _write(
        self, sql: str, params: tuple[Any, ...] = (), *, synced: bool = True
    ) -> tuple[int, list[Any]]:
        """One statement in turn (``turns.Turns``), committed before the turn passes on: its row
        count and the rows it returned (read whole, since the commit comes after the last).
        ``synced``: on disk when this returns, synced after the turn (``WalFlush``); see the
        module's docstring for which writes may not be."""
        with self._unsynced_commit() as conn:
            cur = conn.execute(sql, params)
            done = cur.rowcount, cur.fetchall()
        if synced:
            self._flush()
        return done

    @contextmanager
    def _unsynced_commit(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, in turn, committing without a sync; the connection is
        back to FULL before anything else runs on it."""
        conn = self._conn()
        try:
            with self._turns.taken():
                conn.execute("PRAGMA synchronous=NORMAL")
                try:
                    yield conn
                finally:
                    conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise ServiceUnavailable(f"embedded task store unavailable: {exc}") from exc

    def _flush(self) -> None:
        """Every commit made so far on disk (``WalFlush``), outside the write turn."""
        try:
            self._wal.flush()
        except OSError as exc:
            raise ServiceUnavailable(f"embedded task store could not sync: {exc}") from exc

    def _ring(self) -> None:
        """After a commit the API's waiters care about; a hint, never an error."""
        ring(self.wake, TASKS)

    def create(self, record: TaskRecord, *, max_open: int = 0) -> bool:
        return self.create_many([(record, max_open)])[0]

    def create_many(self, batch: list[tuple[TaskRecord, int]]) -> list[bool]:
        """Insert each ``(record, max_open)`` in one transaction, so one fsync covers them
        all (the API's group commit: ``aio``). Each is one INSERT ... SELECT: the count of
        the owner's open tasks (those just inserted included) and the insert are one atomic
        step, so concurrent submissions cannot overshoot ``max_open``."""
        with self._unsynced_commit() as conn:
            conn.execute("BEGIN IMMEDIATE")  # a write follows the count: no lock upgrade
            try:
                made = [conn.execute(_CREATE, _create_params(r, m)).rowcount == 1 for r, m in batch]
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        try:
            self._flush()
        except ServiceUnavailable:
            # Committed (and visible) but not on disk: no id is answered, so none may stay.
            self._undo_creates(
                [record.id for (record, _), one in zip(batch, made, strict=True) if one]
            )
            raise
        return made

    def _undo_creates(self, task_ids: list[str]) -> None:
        try:
            with self._unsynced_commit() as conn:
                conn.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i in task_ids])
        except ServiceUnavailable:
            log.error("%d task records not synced and not deleted either", len(task_ids))

    def list_tasks(
        self,
        owner: str,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """Newest first by rowid (insertion order); the cursor is the last rowid seen."""
        where = ["owner = ?", "(expires_at IS NULL OR expires_at > ?)"]
        params: list[Any] = [owner, time.time()]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if cursor is not None:
            where.append("rowid < ?")
            params.append(rowid_from(cursor))
        rows = self._execute(
            f"SELECT rowid, {COLUMNS} FROM tasks WHERE {' AND '.join(where)} "  # noqa: S608  # constant SQL; values are parameters
            "ORDER BY rowid DESC LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        page = [row_to_record(row[1:]) for row in rows[:limit]]
        more = len(rows) > limit
        return TaskPage(tasks=page, next_cursor=f"r{rows[limit - 1][0]}" if more else None)

    def key_add(self, key: ApiKey) -> bool:
        cur = self._execute(
            "INSERT INTO api_keys (name, digest, entry) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (key.name, key.digest, key.model_dump_json()),
        )
        return cur.rowcount == 1

    def key_get(self, digest: str) -> ApiKey | None:
        row = self._execute("SELECT entry FROM api_keys WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else ApiKey.model_validate_json(row[0])

    def key_list(self) -> list[ApiKey]:
        rows = self._execute("SELECT entry FROM api_keys ORDER BY name").fetchall()
        return [ApiKey.model_validate_json(row[0]) for row in rows]

    def key_revoke(self, name: str) -> bool:
        return self._execute("DELETE FROM api_keys WHERE name = ?", (name,)).rowcount == 1

    def get(self, task_id: str) -> TaskRecord | None:
        row = self._execute(
            f"SELECT {COLUMNS} FROM tasks WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",  # noqa: S608  # a constant column list
            (task_id, time.time()),
        ).fetchone()
        return None if row is None else row_to_record(row)

    def delete(self, task_id: str) -> None:
        self._execute("DELETE FROM tasks WHERE id = ?", (task_id,))

    def start(self, task_id: str, at: datetime, *, worker: str = "") -> int:
        _, rows = self._write(
            "UPDATE tasks SET status = 'STARTED', started_at = COALESCE(started_at, ?), "
            "worker = ?, attempts = attempts + 1 "
            "WHERE id = ? AND status IN ('QUEUED', 'STARTED') RETURNING attempts",
            (at.isoformat(), worker, task_id),
            synced=False,
        )
        if not rows:
            return 0
        self._ring()
        return int(rows[0][0])

    def finish(
        self,
        task_id: str,
        status: TaskStatus,
        at: datetime,
        *,
        result: Any = None,
        error: ErrorBody | None = None,
        run_s: float | None = None,  # read back from started_at and finished_at
    ) -> bool:
        changed, _ = self._write(
            "UPDATE tasks SET status = ?, finished_at = ?, result = ?, error = ?, expires_at = ? "
            "WHERE id = ? AND status IN ('QUEUED', 'STARTED')",
            (
                status.value,
                at.isoformat(),
                None if result is None else json.dumps(result),
                None if error is None else error.model_dump_json(),
                time.time() + self.ttl_s,
                task_id,
            ),
            synced=False,  # see the module's docstring: a power cut only makes it run again
        )
        if changed == 1:
            self._ring()
        self._finishes += 1
        if self._finishes % _PURGE_EVERY == 0:
            self.purge_expired()
        return changed == 1

    def cancel(self, task_id: str, at: datetime) -> Cancelled:
        changed, _ = self._write(
            "UPDATE tasks SET status = 'CANCELLED', finished_at = ?, expires_at = ? "
            "WHERE id = ? AND status = 'QUEUED'",
            (at.isoformat(), time.time() + self.ttl_s, task_id),
        )
        if changed == 1:
            self._ring()
        return Cancelled(self.get(task_id), done=changed == 1)

    def set_delivery(self, task_id: str, event: str, delivery: Delivery) -> None:
        """The failed deliveries are found by ``json_extract`` over the deliveries of the
        tasks that have any (few): ``failed_deliveries``."""
        self._execute(
            "UPDATE tasks SET deliveries = json_set(COALESCE(deliveries, '{}'), ?, json(?)) "
            "WHERE id = ?",
            (f"$.{event}", delivery.model_dump_json(), task_id),
        )

    def failed_deliveries(self, limit: int = 100) -> list[FailedDelivery]:
        rows = self._execute(
            f"SELECT {COLUMNS} FROM tasks WHERE deliveries LIKE '%\"failed\"%' "  # noqa: S608  # a constant column list
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY rowid DESC LIMIT ?",
            (time.time(), limit),
        ).fetchall()
        found = []
        for row in rows:
            record = row_to_record(row)
            for event, delivery in record.deliveries.items():
                if delivery.state == "failed":
                    found.append(failed_delivery(record, event, delivery))
        found.sort(key=lambda f: f.failed_at or f.task.submitted_at, reverse=True)
        return found[:limit]

    def cache_get(self, key: str) -> str | None:
        row = self._execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def cache_set(self, key: str, value: str) -> None:
        self._execute(
            "INSERT INTO cache (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def reserve_slot(self, key: str, interval_s: float) -> float:
        # One statement, so the read and the booking are one atomic step across processes.
        now = time.time()
        row = self._execute(
            "INSERT INTO slots (key, next_at) VALUES (?, ? + ?) "
            "ON CONFLICT (key) DO UPDATE SET next_at = MAX(next_at, ?) + ? "
            "RETURNING next_at",
            (key, now, interval_s, now, interval_s),
        ).fetchone()
        return max(0.0, float(row[0]) - interval_s - now)

    def claim_key(
        self, key: str, fingerprint: str, task_id: str, ttl_s: int
    ) -> tuple[str, str] | None:
        now = time.time()
        # An expired binding is replaced; a live one wins the conflict and is read back.
        row = self._execute(
            "INSERT INTO idempotency (key, fingerprint, task_id, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, "
            "task_id = excluded.task_id, expires_at = excluded.expires_at "
            "WHERE idempotency.expires_at < ? RETURNING task_id",
            (key, fingerprint, task_id, now + ttl_s, now),
        ).fetchone()
        if row is not None:
            return None
        bound = self._execute(
            "SELECT task_id, fingerprint FROM idempotency WHERE key = ?", (key,)
        ).fetchone()
        return None if bound is None else (str(bound[0]), str(bound[1]))

    def release_key(self, key: str) -> None:
        self._execute("DELETE FROM idempotency WHERE key = ?", (key,))

    def final_among(self, task_ids: list[str]) -> list[str]:
        """Which of ``task_ids`` are final (or gone): one query, whatever their number."""
        rows = self._execute(
            "SELECT value FROM json_each(?) WHERE value NOT IN "
            "(SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?)) "
            "AND status IN ('QUEUED', 'STARTED'))",
            (json.dumps(task_ids), json.dumps(task_ids)),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def finals_among(self, task_ids: list[str]) -> dict[str, TaskRecord | None]:
        """The records of those of ``task_ids`` that are final, and None for those gone (or
        expired): what a woken long-poll answers with, read once for all of them."""
        rows = self._execute(
            f"SELECT j.value, {_JOINED_COLUMNS} FROM json_each(?) AS j "  # noqa: S608  # constant columns
            "LEFT JOIN tasks AS t ON t.id = j.value "
            "AND (t.expires_at IS NULL OR t.expires_at > ?) "
            "WHERE t.id IS NULL OR t.status NOT IN ('QUEUED', 'STARTED')",
            (json.dumps(task_ids), time.time()),
        ).fetchall()
        return {str(row[0]): None if row[1] is None else row_to_record(row[1:]) for row in rows}

    def purge_expired(self) -> int:
        cur = self._execute("DELETE FROM tasks WHERE expires_at < ?", (time.time(),))
        return cur.rowcount

    def make_durable(self) -> None:
        """Put every commit made so far, by any process, on disk: what a commit with
        ``synchronous=FULL`` does for itself, for the commits that skipped it. In WAL mode a
        commit is in the ``-wal`` file, or, once checkpointed, in the database file, which
        SQLite syncs before it reuses the ``-wal`` file; syncing both covers both."""
        sync_file(f"{self.path}-wal")
        sync_file(str(self.path))

    def ping(self) -> None:
        self._execute("SELECT 1").fetchone()

    def durability(self) -> StoreDurability:
        """Read back, not assumed: the pragmas ``_conn`` sets are what makes it durable."""
        journal = str(self._execute("PRAGMA journal_mode").fetchone()[0])
        level = int(self._execute("PRAGMA synchronous").fetchone()[0])
        settings = {"journal_mode": journal, "synchronous": _SYNCHRONOUS.get(level, str(level))}
        if level >= 2:
            risk = "nothing: every commit is on disk before the id is answered."
            return StoreDurability(store="sqlite", durable=True, settings=settings, risk=risk)
        return StoreDurability(
            store="sqlite",
            durable=False,
            settings=settings,
            risk="the last commits before a power cut or kernel crash.",
            fix="the store sets synchronous=FULL on each connection: something changed it",
        )

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._turns.close()

    # --- dead-letter queue: tasks that killed their worker on every attempt ---------
    # The entry is kept whole as JSON: it is only ever read whole, by id or in order.
    # It lives DEAD_LETTER_TTL_S after dead_at; older rows are invisible, then deleted.

    def dead_letter_add(self, entry: DeadLetter) -> None:
        self._execute(
            "INSERT INTO dead_letters (task_id, entry, dead_at) VALUES (?, ?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET "
            "entry = excluded.entry, dead_at = excluded.dead_at",
            (entry.task_id, entry.model_dump_json(), entry.dead_at.timestamp()),
        )
        self._execute("DELETE FROM dead_letters WHERE dead_at <= ?", (_dead_letter_horizon(),))

    def dead_letter_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        rows = self._execute(
            "SELECT entry FROM dead_letters WHERE dead_at > ? "
            "ORDER BY dead_at, task_id LIMIT ? OFFSET ?",
            (_dead_letter_horizon(), limit, offset),
        ).fetchall()
        return [DeadLetter.model_validate_json(row[0]) for row in rows]

    def dead_letter_count(self) -> int:
        row = self._execute(
            "SELECT COUNT(*) FROM dead_letters WHERE dead_at > ?", (_dead_letter_horizon(),)
        ).fetchone()
        return int(row[0])

    def dead_letter_get(self, task_id: str) -> DeadLetter | None:
        row = self._execute(
            "SELECT entry FROM dead_letters WHERE task_id = ? AND dead_at > ?",
            (task_id, _dead_letter_horizon()),
        ).fetchone()
        return None if row is None else DeadLetter.model_validate_json(row[0])

    def dead_letter_remove(self, task_id: str) -> bool:
        cur = self._execute(
            "DELETE FROM dead_letters WHERE task_id = ? AND dead_at > ?",
            (task_id, _dead_letter_horizon()),
        )
        return cur.rowcount == 1

    def dead_letter_purge(self) -> int:
        horizon = _dead_letter_horizon()
        live = self._execute("DELETE FROM dead_letters WHERE dead_at > ?", (horizon,)).rowcount
        self._execute("DELETE FROM dead_letters")
        return live


_CREATE = (
    "INSERT INTO tasks (id, kind, status, submitted_at, callback, owner, queue, input) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE ? <= 0 OR (SELECT COUNT(*) FROM tasks "
    "WHERE owner = ? AND status IN ('QUEUED', 'STARTED')) < ?"
)


def _create_params(record: TaskRecord, max_open: int) -> tuple[Any, ...]:
    return (
        record.id,
        record.kind,
        record.status.value,
        record.submitted_at.isoformat(),
        None if record.callback is None else record.callback.model_dump_json(),
        record.owner,
        record.queue,
        record.input_json,
        max_open,
        record.owner,
        max_open,
    )


def _dead_letter_horizon() -> float:
    """Entries that died at or before this moment (epoch) have expired."""
    return time.time() - DEAD_LETTER_TTL_S
