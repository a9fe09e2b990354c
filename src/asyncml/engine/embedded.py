"""The embedded broker: kombu's SQLAlchemy transport over one SQLite file, tuned for one host.

Two gaps of the stock transport are closed here:

* it hands its transport options to ``create_engine``, so the virtual transport's
  ``polling_interval`` cannot be set through them; the subclass takes it out first and
  gives SQLite a lock timeout so the API and the workers can write at the same time;
* it marks a fetched message invisible and never deletes it; a worker killed before it
  acked leaves its message invisible for ever. :func:`recover_unacked` runs when
  ``asyncml up`` starts (no worker of this data folder is alive then): it makes such
  messages visible again when their task is not final, and deletes the rest.
"""

from __future__ import annotations

import json
import logging
import sqlite3
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


class SqliteChannel(SqlAlchemyChannel):
    def _engine_from_config(self) -> Any:
        from sqlalchemy import create_engine, event

        # Transport options are ignored on purpose: the stock channel passes them all
        # to create_engine, polling_interval included, which SQLAlchemy refuses.
        client = self.connection.client
        assert client is not None
        engine = create_engine(str(client.hostname), connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        return engine


class SqliteTransport(SqlAlchemyTransport):
    Channel = SqliteChannel


def broker_url(data_dir: Path) -> str:
    return f"{SCHEME}+sqlite:///{(data_dir / 'broker.sqlite3').resolve()}"


def recover_unacked(settings: Settings, store: TaskStore) -> tuple[int, int]:
    """Return (restored, deleted) counts of invisible messages in the embedded broker."""
    path = (settings.data_dir / "broker.sqlite3").resolve()
    if not path.exists():
        return (0, 0)
    conn = sqlite3.connect(path, timeout=30)
    try:
        try:
            rows = conn.execute(
                "SELECT id, payload FROM kombu_message WHERE visible = 0"
            ).fetchall()
        except sqlite3.OperationalError:  # no table yet: nothing was ever queued
            return (0, 0)
        restore: list[int] = []
        delete: list[int] = []
        for msg_id, payload in rows:
            task_id = _task_id(payload)
            record = store.get(task_id) if task_id else None
            (restore if record is not None and not record.final else delete).append(msg_id)
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


def _task_id(payload: str) -> str | None:
    try:
        message = json.loads(payload)
        task_id = message.get("headers", {}).get("id")
    except (ValueError, AttributeError):
        return None
    return task_id if isinstance(task_id, str) else None
