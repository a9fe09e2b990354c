"""The embedded store's task events, queue standing and worker heartbeats.

Events live in one table (a global sequence is each event's id, increasing within a
task); ``started`` and ``completed`` are written by triggers inside the state change
(``schema.TRIGGERS``), progress and logs by ``add_events``: not synced (a power cut may
take back the last ones; a process crash cannot), and the API's watchers are rung after.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, Protocol

from asyncml.records import QueueStanding, TaskEvent, TaskRecord, WorkerInfo
from asyncml.store.base import EVENTS_KEPT, heartbeat_fresh

RUNS_KEPT = 50


class _Executes(Protocol):
    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor: ...

    def _write(
        self, sql: str, params: tuple[Any, ...] = (), *, synced: bool = True
    ) -> tuple[int, list[Any]]: ...

    def _ring(self) -> None: ...


class EventsMixin:
    """For ``SqliteTaskStore``: everything here is one or two statements on its connection."""

    def add_events(self: _Executes, task_id: str, events: list[TaskEvent]) -> list[str]:
        if not events:
            return []
        rows = [
            (one.type, one.at.isoformat(), json.dumps(one.data, separators=(",", ":")), task_id)
            for one in events
        ]
        added: list[str] = []
        for row in rows:  # each only while the task is not final (a late flush is dropped)
            _, seq = self._write(
                "INSERT INTO events (task_id, type, at, data) SELECT id, ?, ?, ? FROM tasks "
                "WHERE id = ? AND status IN ('QUEUED', 'STARTED') RETURNING seq",
                row,
                synced=False,
            )
            if seq:
                added.append(str(seq[0][0]))
        self._write(
            "DELETE FROM events WHERE task_id = ? AND seq <= (SELECT seq FROM events "
            "WHERE task_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (task_id, task_id, EVENTS_KEPT),
            synced=False,
        )
        if added:
            self._ring()
        return added

    def events_after(
        self: _Executes, task_id: str, after: str | None, limit: int = EVENTS_KEPT
    ) -> list[TaskEvent]:
        since = int(after) if after and after.isdigit() else 0
        rows = self._execute(
            "SELECT seq, type, at, data FROM events WHERE task_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (task_id, since, limit),
        ).fetchall()
        return [
            TaskEvent(
                id=str(seq),
                task_id=task_id,
                type=kind,
                at=datetime.fromisoformat(at),
                data=json.loads(data),
            )
            for seq, kind, at, data in rows
        ]

    def events_since(self: _Executes, seq: int) -> tuple[int, list[str], list[str]]:
        """The newest event's sequence, the tasks with events after ``seq``, and the queues
        whose order those events moved (a task of theirs started or ended)."""
        rows = self._execute(
            "SELECT e.task_id, MAX(e.seq), MAX(e.type IN ('started', 'completed')), t.queue "
            "FROM events AS e LEFT JOIN tasks AS t ON t.id = e.task_id WHERE e.seq > ? "
            "GROUP BY e.task_id",
            (seq,),
        ).fetchall()
        newest = max((int(row[1]) for row in rows), default=seq)
        moved = sorted({str(row[3]) for row in rows if row[2] and row[3]})
        return newest, [str(row[0]) for row in rows], moved

    def last_event_seq(self: _Executes) -> int:
        row = self._execute("SELECT MAX(seq) FROM events").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def standing(self: _Executes, record: TaskRecord) -> QueueStanding | None:
        row = self._execute(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE queue = t.queue AND status = 'QUEUED' "
            "AND rowid < t.rowid), (SELECT COUNT(*) FROM tasks WHERE queue = t.queue "
            "AND status = 'STARTED') FROM tasks AS t WHERE t.id = ? AND t.status = 'QUEUED' "
            "AND t.queue != ''",
            (record.id,),
        ).fetchone()
        if row is None:
            return None
        runs = self._execute(
            "SELECT (julianday(finished_at) - julianday(started_at)) * 86400 FROM tasks "
            "WHERE kind = ? AND status = 'SUCCESS' ORDER BY rowid DESC LIMIT ?",
            (record.kind, RUNS_KEPT),
        ).fetchall()
        workers = [
            WorkerInfo.model_validate_json(entry)
            for (entry,) in self._execute("SELECT entry FROM workers").fetchall()
        ]
        consumers = sum(
            w.concurrency for w in workers if record.queue in w.queues and heartbeat_fresh(w)
        )
        return QueueStanding(
            position=int(row[0]),
            running=int(row[1]),
            consumers=consumers,
            run_times_s=[float(r[0]) for r in runs if r[0] is not None],
        )

    def heartbeat(self: _Executes, worker: WorkerInfo) -> None:
        self._write(
            "INSERT INTO workers (name, entry) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET entry = excluded.entry",
            (worker.name, worker.model_dump_json()),
            synced=False,
        )

    def worker_gone(self: _Executes, name: str) -> None:
        self._execute("DELETE FROM workers WHERE name = ?", (name,))

    def workers(self: _Executes) -> list[WorkerInfo]:
        found = [
            WorkerInfo.model_validate_json(entry)
            for (entry,) in self._execute("SELECT entry FROM workers ORDER BY name").fetchall()
        ]
        return [w for w in found if heartbeat_fresh(w)]
