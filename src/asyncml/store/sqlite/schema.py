"""The embedded store's tables, and how a row becomes a record.

``ADDED_COLUMNS`` upgrades a data folder of an earlier version in place; ``INDEXES`` come
after it, since they index some of those columns.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from asyncml.errors import InputInvalid
from asyncml.records import Callback, ErrorBody, TaskRecord, TaskStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    submitted_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    callback TEXT,
    deliveries TEXT
);
CREATE INDEX IF NOT EXISTS tasks_expires_at ON tasks (expires_at);
CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS slots (key TEXT PRIMARY KEY, next_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, task_id TEXT NOT NULL, expires_at REAL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    task_id TEXT PRIMARY KEY, entry TEXT NOT NULL, dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_dead_at ON dead_letters (dead_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events (task_id, seq);
CREATE TABLE IF NOT EXISTS workers (name TEXT PRIMARY KEY, entry TEXT NOT NULL);
"""
ADDED_COLUMNS = {
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "callback": "TEXT",
    "deliveries": "TEXT",
    "owner": "TEXT NOT NULL DEFAULT ''",
    "queue": "TEXT NOT NULL DEFAULT ''",
    "worker": "TEXT NOT NULL DEFAULT ''",
    "input": "TEXT",  # the input as submitted, for the dashboard (store/history.py)
}
# After the columns exist (a data folder of an earlier version gets them first).
INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner);
CREATE INDEX IF NOT EXISTS tasks_owner_status ON tasks (owner, status);
CREATE INDEX IF NOT EXISTS tasks_queue_status ON tasks (queue, status);
CREATE INDEX IF NOT EXISTS tasks_kind_status ON tasks (kind, status);
"""
# A state change appends its event in the same statement (a trigger runs inside it), as
# the Redis store's scripts do: started per attempt, completed once, and a deleted task's
# events go with it.
TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS task_started AFTER UPDATE OF attempts ON tasks
WHEN NEW.status = 'STARTED' BEGIN
  INSERT INTO events (task_id, type, at, data) VALUES (
    NEW.id, 'started', strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'),
    json_object('worker', NEW.worker, 'attempt', NEW.attempts));
END;
CREATE TRIGGER IF NOT EXISTS task_completed AFTER UPDATE OF status ON tasks
WHEN NEW.status IN ('SUCCESS', 'FAILURE', 'CANCELLED')
 AND OLD.status IN ('QUEUED', 'STARTED') BEGIN
  INSERT INTO events (task_id, type, at, data) VALUES (NEW.id, 'completed', NEW.finished_at, '{}');
END;
CREATE TRIGGER IF NOT EXISTS task_deleted AFTER DELETE ON tasks BEGIN
  DELETE FROM events WHERE task_id = OLD.id;
END;
"""
COLUMNS = (
    "id, kind, status, result, error, submitted_at, started_at, finished_at, callback, "
    "deliveries, owner, queue"
)


def rowid_from(cursor: str) -> int:
    if not (cursor.startswith("r") and cursor[1:].isdigit()):
        raise InputInvalid("cursor: not a cursor this server gave out")
    return int(cursor[1:])


def row_to_record(row: tuple[Any, ...]) -> TaskRecord:
    (id_, kind, status, result, error, submitted, started, finished, callback, deliveries) = row[
        :10
    ]
    owner, queue = row[10:]
    return TaskRecord(
        owner=owner,
        queue=queue,
        callback=None if callback is None else Callback.model_validate_json(callback),
        deliveries={} if deliveries is None else json.loads(deliveries),
        id=id_,
        kind=kind,
        status=TaskStatus(status),
        result=None if result is None else json.loads(result),
        error=None if error is None else ErrorBody.model_validate_json(error),
        submitted_at=datetime.fromisoformat(submitted),
        started_at=None if started is None else datetime.fromisoformat(started),
        finished_at=None if finished is None else datetime.fromisoformat(finished),
    )
