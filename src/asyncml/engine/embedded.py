"""The embedded broker: kombu's SQLAlchemy transport over one SQLite file, tuned for one host.

Four gaps of the stock transport are closed here:

* it hands its transport options to ``create_engine``, so the virtual transport's
  ``polling_interval`` cannot be set through them; the subclass takes it out first and
  gives SQLite a lock timeout so the API and the workers can write at the same time;
* it marks a fetched message invisible and never deletes it; a worker killed before it
  acked leaves its message invisible for ever. :func:`recover_unacked` runs when
  ``asyncml up`` starts (no worker of this data folder is alive then): it makes such
  messages visible again when their task is not final, and deletes the rest;
* it creates its tables and queue rows with a lock that holds only within one process;
  the API and the workers of a fresh data folder start together, and the loser of that
  race got "table already exists" (which kombu's retry turns into a closed channel and an
  AttributeError) or a duplicate queue row. Here a lock file next to the database holds
  across processes;
* its channel's session breaks when two threads use it at once, which Celery 5.7 does
  (see ``SqliteChannel``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import sqlite3
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SqlAlchemyChannel
from kombu.transport.sqlalchemy import Transport as SqlAlchemyTransport

from asyncml.settings import Settings
from asyncml.store import TaskStore

log = logging.getLogger(__name__)

SCHEME = "asyncml-sqlite"
TRANSPORT_ALIASES[SCHEME] = f"{__name__}:SqliteTransport"


@contextmanager
def _schema_lock(database: str) -> Iterator[None]:
    """Serialise creating the broker's tables and queue rows across processes."""
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class SqliteChannel(SqlAlchemyChannel):
    """One SQLAlchemy session per channel, used by one thread at a time.

    Celery 5.7 runs a worker's ack and reject callbacks at once in the thread that reports
    the task's end (the prefork pool's result handler) when the transport has no event
    loop, as this one has not. A reject that requeues (a worker process lost) then writes
    through the channel's session while the consumer thread polls with it: the session's
    transaction broke, its connection kept SQLite's write lock, and the worker stopped
    taking tasks. Every use of the session here holds the channel's lock.
    """

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._session_lock = threading.RLock()
        super().__init__(connection, **kwargs)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # as in kombu-stubs
        with self._session_lock:
            super()._put(queue, payload, **kwargs)

    def _get(self, queue: str) -> Any:  # type: ignore[override]  # as in kombu-stubs
        with self._session_lock:
            return super()._get(queue)

    def _purge(self, queue: str) -> int:
        with self._session_lock:
            return int(super()._purge(queue))

    def _size(self, queue: str) -> int:
        with self._session_lock:
            return int(super()._size(queue))

    def _url(self) -> str:
        client = self.connection.client
        if client is None:
            raise RuntimeError("the embedded channel has no connection")
        return str(client.hostname)

    def _database(self) -> str:
        return self._url().removeprefix("sqlite:///")

    def _open(self) -> Any:
        if self._url() in self._engines:
            return super()._open()
        with _schema_lock(self._database()):
            return super()._open()

    def _get_or_create(self, queue: str) -> Any:
        with self._session_lock:
            found = self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).first()
            if found is not None:
                return found
            with _schema_lock(self._database()):
                # The stock method, now alone across processes: it re-reads, then inserts.
                return super()._get_or_create(queue)  # type: ignore[misc]  # untyped in the stubs

    def _engine_from_config(self) -> Any:
        from sqlalchemy import create_engine, event

        # Transport options are ignored on purpose: the stock channel passes them all
        # to create_engine, polling_interval included, which SQLAlchemy refuses.
        engine = create_engine(self._url(), connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        return engine


class SqliteTransport(SqlAlchemyTransport):
    Channel = SqliteChannel


def broker_url(data_dir: Path) -> str:
    return f"{SCHEME}+sqlite:///{(data_dir / 'broker.sqlite3').resolve()}"


def recover_unacked(
    settings: Settings, store: TaskStore, queues: Collection[str] | None = None
) -> tuple[int, int]:
    """Return (restored, deleted) counts of messages in the embedded broker.

    Run only while no worker of this data folder consuming these ``queues`` (default: all)
    is alive. For each task that is not
    final, exactly one message stays: a visible one if the task was already requeued
    (Celery puts a fresh copy back when a worker is lost), else its invisible orphan made
    visible again. Every other copy, and every message of a final or expired task, goes.
    """
    path = (settings.data_dir / "broker.sqlite3").resolve()
    if not path.exists():
        return (0, 0)
    conn = sqlite3.connect(path, timeout=30)
    try:
        try:
            named = conn.execute(
                "SELECT m.id, m.visible, m.payload, q.name FROM kombu_message m "
                "JOIN kombu_queue q ON q.id = m.queue_id ORDER BY m.id"
            ).fetchall()
            rows = [r[:3] for r in named if queues is None or r[3] in queues]
        except sqlite3.OperationalError:  # no table yet: nothing was ever queued
            return (0, 0)
        by_task: dict[str, list[tuple[int, bool]]] = {}
        delete: list[int] = []
        restore: list[int] = []
        for msg_id, visible, payload in rows:
            task_id = _task_id(payload)
            if task_id is None:
                continue  # not ours to judge
            if task_id.startswith("notice:"):
                # A webhook attempt (maybe waiting out its back-off): bring it back; the
                # delivery task skips it if its notice was settled meanwhile.
                if not visible:
                    restore.append(msg_id)
                continue
            by_task.setdefault(task_id, []).append((msg_id, bool(visible)))
        for task_id, messages in by_task.items():
            hidden = [m for m, visible in messages if not visible]
            if not hidden:
                continue
            record = store.get(task_id)
            if record is None or record.final:
                delete.extend(m for m, _ in messages)
            elif any(visible for _, visible in messages):
                delete.extend(hidden)
            else:
                restore.append(hidden[0])
                delete.extend(hidden[1:])
        with conn:
            conn.executemany(
                "UPDATE kombu_message SET visible = 1 WHERE id = ?", [(i,) for i in restore]
            )
            conn.executemany("DELETE FROM kombu_message WHERE id = ?", [(i,) for i in delete])
    finally:
        conn.close()
    if restore:
        log.warning("embedded broker: restored %d unacknowledged task(s)", len(restore))
    return (len(restore), len(delete))


@contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the data folder for one ``asyncml up``: recovery assumes no other worker."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "up.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another asyncml up is running on {data_dir.resolve()}; "
                "stop it or set ASYNCML_DATA_DIR to another folder"
            ) from None
        yield


def _task_id(payload: str) -> str | None:
    try:
        message = json.loads(payload)
        task_id = message.get("headers", {}).get("id")
    except (ValueError, AttributeError):
        return None
    return task_id if isinstance(task_id, str) else None


def waiting_messages(settings: Settings, queues: list[str]) -> dict[str, int]:
    """Visible (not yet fetched) messages per queue in the embedded broker."""
    path = (settings.data_dir / "broker.sqlite3").resolve()
    depths = dict.fromkeys(queues, 0)
    if not path.exists():
        return depths
    conn = sqlite3.connect(path, timeout=5)
    try:
        rows = conn.execute(
            "SELECT q.name, COUNT(m.id) FROM kombu_queue q "
            "LEFT JOIN kombu_message m ON m.queue_id = q.id AND m.visible = 1 GROUP BY q.name"
        ).fetchall()
    except sqlite3.OperationalError:
        return depths
    finally:
        conn.close()
    depths.update({name: int(count) for name, count in rows if name in depths})
    return depths
