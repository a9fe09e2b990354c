"""What ``asyncml up`` does to the embedded broker's messages, beside the transport
(engine/embedded.py): it holds the data folder for itself (``exclusive``), brings back the
messages of a dead worker's unfinished tasks before a worker starts (``recover_unacked``),
and, while it runs, deletes the fetched messages of finished tasks (``sweeping``), which
the stock transport never deletes.
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

from asyncml.engine.embedded import broker_file, broker_path
from asyncml.engine.notices import NOTICE_ID_PREFIX
from asyncml.errors import ServiceUnavailable
from asyncml.settings import Settings
from asyncml.store import TaskStore
from asyncml.store.sqlite import SqliteTaskStore

log = logging.getLogger(__name__)

_SWEEP_CHUNK = 500  # messages deleted per write turn


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
    path = broker_path(settings.data_dir)
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
            if task_id.startswith(NOTICE_ID_PREFIX):
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


def sweep_finished(settings: Settings, store: SqliteTaskStore) -> int:
    """Delete the fetched messages of final (or gone) tasks while workers run; return how
    many went.

    The stock transport never deletes a message (a fetch hides it, an ack does nothing), so
    the broker file kept every message, input included, until the next ``asyncml up``. A
    message goes only once its task's outcome is on disk: outcomes are committed without
    an fsync, and a message deleted before its task's outcome is durable would leave, after
    a power cut, an unfinished task with no message to run it again. Messages not yet
    fetched, and webhook attempts (a worker holds one through its back-off), are left to
    :func:`recover_unacked` at the next start.
    """
    path = broker_path(settings.data_dir)
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        try:
            fetched = "SELECT id, payload FROM kombu_message WHERE visible = 0"
            rows = conn.execute(fetched).fetchall()
        except sqlite3.OperationalError:  # no table yet: nothing was ever queued
            return 0
        by_task: dict[str, list[int]] = {}
        for msg_id, payload in rows:
            task_id = _task_id(payload)
            if task_id is not None and not task_id.startswith(NOTICE_ID_PREFIX):
                by_task.setdefault(task_id, []).append(msg_id)
        final = store.final_among(list(by_task)) if by_task else []
        if not final:
            return 0
        store.make_durable()  # every outcome just read as final is on disk from here
        doomed = [msg_id for task_id in final for msg_id in by_task[task_id]]
        turns = broker_file(str(path)).turns
        for start in range(0, len(doomed), _SWEEP_CHUNK):
            with turns.taken(), conn:  # short turns: publishes and fetches go between
                conn.executemany(
                    "DELETE FROM kombu_message WHERE id = ?",
                    [(i,) for i in doomed[start : start + _SWEEP_CHUNK]],
                )
    finally:
        conn.close()
    return len(doomed)


@contextmanager
def sweeping(settings: Settings) -> Iterator[None]:
    """Run :func:`sweep_finished` every ``embedded_sweep_interval_s`` in a thread of
    ``asyncml up``, for as long as the block runs. With the records in Redis (an embedded
    broker beside a Redis store) it does not run: whether an outcome is on disk is then
    Redis's to say, and the messages wait for the next start's recovery as before."""
    from asyncml.store import open_store

    store = open_store(settings)
    if not isinstance(store, SqliteTaskStore):
        store.close()
        yield
        return
    sqlite_store = store
    stop = threading.Event()

    def sweep_forever() -> None:
        try:
            while not stop.wait(settings.embedded_sweep_interval_s):
                try:
                    swept = sweep_finished(settings, sqlite_store)
                except (sqlite3.Error, ServiceUnavailable, OSError) as exc:
                    log.warning("embedded broker sweep failed (tried again later): %s", exc)
                    continue
                except Exception:  # a bug: say so, and keep sweeping (it is only upkeep)
                    log.exception("embedded broker sweep failed (tried again later)")
                    continue
                if swept:
                    log.debug("embedded broker: deleted %d finished message(s)", swept)
        finally:
            sqlite_store.close()  # this thread's connection

    thread = threading.Thread(target=sweep_forever, name="broker-sweep", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sqlite_store.close()  # this thread's connection (opened with the store)


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
