"""The embedded broker: kombu's SQLAlchemy transport over one SQLite file, tuned for one host.

Four gaps of the stock transport are closed here:

* it hands its transport options to ``create_engine``, so the virtual transport's
  ``polling_interval`` cannot be set through them; the subclass takes it out first and
  gives SQLite a lock timeout so the API and the workers can write at the same time;
* it marks a fetched message invisible and never deletes it, not even on an ack; a worker
  killed before it acked leaves its message invisible for ever, and the file keeps every
  message. ``asyncml up`` closes that gap (engine/embedded_upkeep.py): before a worker
  starts it makes such messages visible again when their task is not final, and while it
  runs it deletes the fetched messages of finished tasks;
* it creates its tables and queue rows with a lock that holds only within one process;
  the API and the workers of a fresh data folder start together, and the loser of that
  race got "table already exists" (which kombu's retry turns into a closed channel and an
  AttributeError) or a duplicate queue row. Here a lock file next to the database holds
  across processes;
* its channel's session breaks when two threads use it at once, which Celery 5.7 does
  (see ``SqliteChannel``);
* it polls: every ``polling_interval`` each consuming worker opened a write transaction
  (``BEGIN IMMEDIATE``) per queue it consumes, to learn that nothing was there. At 20 ms
  that was a quarter of a core for ``asyncml up`` doing nothing, and every poll held the
  file's write lock that the API's publishes wait for. Here a publisher rings a doorbell
  (``Doorbell``: a datagram to each process consuming that queue) after it commits, and a
  worker looks at SQLite when rung, when its own pool frees a slot, or after
  ``polling_interval`` (the fallback for a missed ring), and first with one read of which
  of its queues hold anything, taking the write lock only to fetch from those. The
  doorbell itself lives with the store (store/sqlite/doorbell.py), which rings the API's
  waiters the same way.

Over 350 lines because the transport's gaps and its wake-ups share the channel's schema
and locks; the wake-ups are the first to move out.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SqlAlchemyChannel
from kombu.transport.sqlalchemy import Transport as SqlAlchemyTransport
from kombu.transport.virtual import Empty

from asyncml.settings import Settings
from asyncml.store.sqlite.doorbell import (
    DEFAULT_FALLBACK_POLL_S,
    Doorbell,
    ring,
    wake_dir,
)
from asyncml.store.sqlite.group_commit import GroupCommit
from asyncml.store.sqlite.turns import Turns, schema_lock
from asyncml.store.sqlite.wal_flush import WalFlush

log = logging.getLogger(__name__)

SCHEME = "asyncml-sqlite"
TRANSPORT_ALIASES[SCHEME] = f"{__name__}:SqliteTransport"


# The stock transport's statements, without SQLAlchemy: its Session and Core cost the worker
# ~0.25 ms a fetch and the API about as much a publish, in a process bound by its CPU. They
# keep the ORM's row versioning (``version``) and write ``timestamp`` as its DateTime does.
_INSERT_MESSAGE = (
    "INSERT INTO kombu_message (visible, payload, version, queue_id) VALUES (1, ?, 1, ?)"
)
_NEXT_MESSAGE = (
    "SELECT id, payload FROM kombu_message WHERE queue_id = ? AND visible != 0 "
    "ORDER BY timestamp, id LIMIT 1"
)
_HIDE_MESSAGE = (
    "UPDATE kombu_message SET visible = 0, timestamp = ?, version = version + 1 WHERE id = ?"
)
_WAITING_QUEUES = (
    "SELECT DISTINCT q.name FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id "
    "WHERE m.visible = 1 AND q.name IN (SELECT value FROM json_each(?))"
)
_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DateTime storage format


@contextmanager
def _as_transport_error() -> Iterator[None]:
    """A SQLite error as the stock transport raises it (SQLAlchemy's ``OperationalError``,
    one of its connection errors): kombu then retries a publish and Celery reconnects a
    consumer, as they do for the stock transport."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except sqlite3.Error as exc:
        raise OperationalError(None, None, exc) from exc


class BrokerFile:
    """What this process's channels share for one broker file.

    ``turns``: its writers take turns (store/sqlite/turns.py), the API's publishes and every
    worker's fetches, which otherwise slept in SQLite's busy handler. ``publishes``: the
    publishes that arrive during a commit share the next one (group_commit.py)."""

    def __init__(self, database: str) -> None:
        self.turns = Turns(database)
        self.publishes: GroupCommit[tuple[int, str]] = GroupCommit()
        self.wal = WalFlush(database)


_files_lock = threading.Lock()
_files: dict[tuple[int, str], BrokerFile] = {}


def broker_file(database: str) -> BrokerFile:
    """This process's: a forked child (a prefork pool process publishes notices) must not
    share its parent's, whose locks and sync state were copied in whatever state they had."""
    key = (os.getpid(), database)
    with _files_lock:
        found = _files.get(key)
        if found is None:
            found = _files[key] = BrokerFile(database)
        return found


class SqliteChannel(SqlAlchemyChannel):
    """One SQLAlchemy session and one sqlite3 connection per channel, each used by one
    thread at a time.

    Celery 5.7 runs a worker's ack and reject callbacks at once in the thread that reports
    the task's end (the prefork pool's result handler) when the transport has no event
    loop, as this one has not. A reject that requeues (a worker process lost) then writes
    through the channel's session while the consumer thread polls with it: the session's
    transaction broke, its connection kept SQLite's write lock, and the worker stopped
    taking tasks. Every use of the session or the connection here holds the channel's lock.
    """

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._session_lock = threading.RLock()
        self._queue_ids: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None
        super().__init__(connection, **kwargs)

    def _raw(self) -> sqlite3.Connection:
        """This channel's own sqlite3 connection for the hot statements (publish, fetch,
        the read before a fetch), used under the channel's lock; the session (which
        creates the tables) keeps the rest."""
        if self._conn is None:
            self.session  # noqa: B018  # opens the engine: the tables exist from here
            conn = sqlite3.connect(
                self._database(), timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # No sync inside a commit: a publish is synced after the turn (wal_flush.py), a
            # fetch is not synced at all (see _get).
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        try:
            super().close()
        finally:
            with self._session_lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # as in kombu-stubs
        from kombu.utils.json import dumps

        def write(messages: list[tuple[int, str]]) -> None:
            conn = self._raw()
            with _as_transport_error():  # the publish fails and can be retried
                # Committed under the turn without a sync; synced after it (below).
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_INSERT_MESSAGE, [(body, q) for q, body in messages])
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

        database = self._database()
        with self._session_lock:
            message = (self._queue_id(queue), dumps(payload))
            # Publishes of this process that arrive during a commit share the next one.
            shared = broker_file(database)
            shared.publishes.submit(message, shared.turns.taken, write)
        # An accepted task is on disk before the API answers: this syncs the WAL (and with
        # it every fetch committed before it, see _get), outside the file's write turn.
        shared.wal.flush()
        ring(wake_dir(database), queue)  # a woken worker finds it, on disk

    def _get(self, queue: str) -> Any:  # type: ignore[override]  # as in kombu-stubs
        """A fetch only marks its message invisible, and losing that mark (to a power cut,
        not a process crash: WAL) only brings the message back, as a lost worker does. So
        it commits without syncing; a publish's sync (wal_flush.py) covers it later."""
        from kombu.utils.encoding import bytes_to_str
        from kombu.utils.json import loads

        with self._session_lock:
            queue_id = self._queue_id(queue)
            conn = self._raw()
            with broker_file(self._database()).turns.taken(), _as_transport_error():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute(_NEXT_MESSAGE, (queue_id,)).fetchone()
                    if row is None:
                        raise Empty()
                    conn.execute(_HIDE_MESSAGE, (datetime.now().strftime(_DATETIME), row[0]))
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        return loads(bytes_to_str(row[1]))

    def _queue_id(self, queue: str) -> int:
        """Queue rows are never deleted: one look per channel and queue."""
        queue_id = self._queue_ids.get(queue)
        if queue_id is None:
            queue_id = self._queue_ids[queue] = int(self._get_or_create(queue).id)
        return queue_id

    def _waiting_queues(self, queues: Collection[str]) -> list[str]:
        """Which of ``queues`` hold a visible message: one read, no write lock (WAL readers
        do not block writers), so that an empty queue costs no ``BEGIN IMMEDIATE``."""
        if not queues:
            return []
        names = json.dumps(list(queues))
        with self._session_lock, _as_transport_error():
            # Autocommit: the read ends with its last row, so a later one sees newer rows.
            found = {row[0] for row in self._raw().execute(_WAITING_QUEUES, (names,)).fetchall()}
        return [q for q in queues if q in found]

    def _poll(self, cycle: Any, callback: Callable[..., Any], timeout: float | None = None) -> Any:
        """Fetch from the first queue (in turn, for fairness) that the read says holds one."""
        waiting = self._waiting_queues(self._active_queues)
        if not waiting:
            raise Empty()
        self._turn = (getattr(self, "_turn", 0) + 1) % len(waiting)
        for queue in waiting[self._turn :] + waiting[: self._turn]:
            try:
                return self._get_and_deliver(queue, callback)
            except Empty:
                continue  # another worker took it between the read and the fetch
        raise Empty()

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        self._doorbell().listen(queue)  # before the first look: no ring may be missed
        return super().basic_consume(queue, *args, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._doorbell().forget(queue)
        return result

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)
        self._doorbell().ring_self()  # a slot of the prefetch window is free again

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)
        self._doorbell().ring_self()

    def _doorbell(self) -> Doorbell:
        transport = self.connection
        if not isinstance(transport, SqliteTransport):
            raise RuntimeError("the embedded channel has no transport")
        return transport.doorbell(wake_dir(self._database()))

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
        with schema_lock(self._database()):
            return super()._open()

    def _get_or_create(self, queue: str) -> Any:
        with self._session_lock:
            found = self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).first()
            if found is not None:
                return found
            with schema_lock(self._database()):
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
            dbapi_conn.execute("PRAGMA synchronous=FULL")  # the session's writes: tables, queues

        return engine


class SqliteTransport(SqlAlchemyTransport):
    """``polling_interval`` is the fallback poll: how long a consumer waits for a ring
    before it looks at SQLite anyway (a ring lost with a restarted process, say)."""

    Channel = SqliteChannel
    polling_interval = DEFAULT_FALLBACK_POLL_S
    _doorbell: Doorbell | None = None

    def doorbell(self, wake: Path) -> Doorbell:
        """This connection's doorbell, bound on first use (only consumers use one)."""
        if self._doorbell is None:
            self._doorbell = Doorbell(wake)
        return self._doorbell

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]  # kombu-stubs' two bases disagree
        """Deliver one message; between looks, wait for a ring instead of sleeping."""
        began = monotonic()
        cycle = self.cycle
        if cycle is None:
            raise RuntimeError("the embedded transport is closed")
        while True:
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            left = None if timeout is None else timeout - (monotonic() - began)
            if left is not None and left <= 0:
                raise TimeoutError()  # socket.timeout, which Celery's loop expects
            wait = self.polling_interval if left is None else min(left, self.polling_interval)
            if self._doorbell is None:  # not consuming: nothing can ring
                threading.Event().wait(wait)  # the stock transport's sleep between looks
            elif not self._doorbell.wait(wait):
                self._doorbell.renew()

    def close_connection(self, connection: Any) -> None:
        try:
            super().close_connection(connection)
        finally:
            if self._doorbell is not None:
                self._doorbell.close()
                self._doorbell = None


def broker_path(data_dir: Path) -> Path:
    return (data_dir / "broker.sqlite3").resolve()


def broker_url(data_dir: Path) -> str:
    return f"{SCHEME}+sqlite:///{broker_path(data_dir)}"


def waiting_messages(settings: Settings, queues: list[str]) -> dict[str, int]:
    """Visible (not yet fetched) messages per queue in the embedded broker."""
    path = broker_path(settings.data_dir)
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
