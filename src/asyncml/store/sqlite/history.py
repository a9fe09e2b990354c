"""The embedded store's side of the dashboard's history (see ``store/history.py``).

The tasks table already holds every record by insertion order (rowid) with an index by
kind and status; one more index, by finish time, serves the last hour's charts. Times
are ISO strings with the same +00:00 offset, so comparing them as text orders them.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

from asyncml.records import TaskPage, TaskStatus
from asyncml.store.history import FinishedTask
from asyncml.store.sqlite.schema import COLUMNS, row_to_record, rowid_from

if TYPE_CHECKING:
    from asyncml.store.sqlite.sync import SqliteTaskStore

HISTORY_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_finished_at ON tasks (finished_at);
"""


class _Executes(Protocol):
    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor: ...


def _seconds(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


class HistoryMixin:
    """For ``SqliteTaskStore``: one statement each."""

    def list_all(
        self: _Executes,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """Every owner's tasks, newest first by rowid (submit order)."""
        where = ["(expires_at IS NULL OR expires_at > ?)"]
        params: list[Any] = [time.time()]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if since is not None:
            where.append("submitted_at >= ?")
            params.append(since.isoformat())
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

    def finished_since(self: _Executes, since: datetime) -> list[FinishedTask]:
        rows = self._execute(
            "SELECT id, status, kind, submitted_at, started_at, finished_at, "
            "json_extract(error, '$.type') FROM tasks "
            "WHERE finished_at >= ? AND status IN ('SUCCESS', 'FAILURE', 'CANCELLED') "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY finished_at",
            (since.isoformat(), time.time()),
        ).fetchall()
        return [
            FinishedTask(
                task_id=task_id,
                status=status,
                kind=kind,
                finished_at=datetime.fromisoformat(finished).timestamp(),
                wait_s=_seconds(submitted, started),
                run_s=_seconds(started, finished),
                error_type=error_type or "",
            )
            for task_id, status, kind, submitted, started, finished, error_type in rows
        ]

    def queue_depths(self: _Executes, queues: list[str]) -> dict[str, int]:
        """QUEUED tasks per queue, from the records (index by queue and status)."""
        rows = self._execute(
            "SELECT queue, COUNT(*) FROM tasks WHERE status = 'QUEUED' GROUP BY queue"
        ).fetchall()
        counts = {str(queue): int(count) for queue, count in rows}
        return {queue: counts.get(queue, 0) for queue in queues}

    def task_input(self: _Executes, task_id: str) -> str | None:
        row = self._execute("SELECT input FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])


class _HoldsStore(Protocol):
    @property
    def _store(self) -> SqliteTaskStore: ...


class AsyncHistoryMixin:
    """For ``AsyncSqliteTaskStore``: the same reads, each in a worker thread."""

    async def list_all(
        self: _HoldsStore,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        return await anyio.to_thread.run_sync(
            functools.partial(
                self._store.list_all,
                status=status,
                kind=kind,
                since=since,
                limit=limit,
                cursor=cursor,
            )
        )

    async def finished_since(self: _HoldsStore, since: datetime) -> list[FinishedTask]:
        return await anyio.to_thread.run_sync(self._store.finished_since, since)

    async def queue_depths(self: _HoldsStore, queues: list[str]) -> dict[str, int]:
        return await anyio.to_thread.run_sync(self._store.queue_depths, queues)

    async def task_input(self: _HoldsStore, task_id: str) -> str | None:
        return await anyio.to_thread.run_sync(self._store.task_input, task_id)
