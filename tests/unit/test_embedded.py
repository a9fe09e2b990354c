"""The embedded broker's start-up recovery, on a real SQLite broker file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from asyncml.engine import Engine
from asyncml.engine.embedded import exclusive, recover_unacked
from asyncml.registry import default_registry
from asyncml.settings import Settings
from asyncml.store import TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = Engine(settings, default_registry())
    yield engine
    engine.close()


def publish(engine: Engine, store: SqliteTaskStore, task_id: str, copies: int = 1) -> None:
    store.create(
        TaskRecord(id=task_id, kind="audio.length", status=TaskStatus.QUEUED, submitted_at=utcnow())
    )
    kind = default_registry().get("audio.length")
    for _ in range(copies):
        engine.publish(kind, task_id, {"audio_url": "http://example.org/a.wav"})


def broker_rows(settings: Settings, task_id: str) -> list[bool]:
    """Visibility of each message of one task, oldest first."""
    conn = sqlite3.connect(settings.data_dir / "broker.sqlite3")
    try:
        rows = conn.execute("SELECT visible, payload FROM kombu_message ORDER BY id").fetchall()
    finally:
        conn.close()
    return [bool(visible) for visible, payload in rows if task_id in payload]


def hide(settings: Settings, task_id: str) -> None:
    """What a worker's fetch does: the message stays, invisible, until someone acks it."""
    conn = sqlite3.connect(settings.data_dir / "broker.sqlite3")
    with conn:
        conn.execute("UPDATE kombu_message SET visible = 0 WHERE payload LIKE ?", (f"%{task_id}%",))
    conn.close()


def test_orphan_of_an_unfinished_task_is_made_visible(
    engine: Engine, store: SqliteTaskStore, settings: Settings
) -> None:
    publish(engine, store, "t1")
    hide(settings, "t1")
    assert recover_unacked(settings, store) == (1, 0)
    assert broker_rows(settings, "t1") == [True]


def test_orphan_beside_a_requeued_copy_is_deleted(
    engine: Engine, store: SqliteTaskStore, settings: Settings
) -> None:
    publish(engine, store, "t1")
    hide(settings, "t1")
    kind = default_registry().get("audio.length")
    engine.publish(kind, "t1", {"audio_url": "http://example.org/a.wav"})  # Celery's requeue
    assert recover_unacked(settings, store) == (0, 1)
    assert broker_rows(settings, "t1") == [True]


def test_only_one_of_several_orphans_comes_back(
    engine: Engine, store: SqliteTaskStore, settings: Settings
) -> None:
    publish(engine, store, "t1", copies=3)
    hide(settings, "t1")
    assert recover_unacked(settings, store) == (1, 2)
    assert broker_rows(settings, "t1") == [True]


def test_messages_of_finished_tasks_are_deleted(
    engine: Engine, store: SqliteTaskStore, settings: Settings
) -> None:
    publish(engine, store, "t1")
    hide(settings, "t1")
    store.finish("t1", TaskStatus.SUCCESS, utcnow(), result={"audio_length": 1.0})
    assert recover_unacked(settings, store) == (0, 1)
    assert broker_rows(settings, "t1") == []


def test_waiting_messages_are_left_alone(
    engine: Engine, store: SqliteTaskStore, settings: Settings
) -> None:
    publish(engine, store, "t1")
    assert recover_unacked(settings, store) == (0, 0)
    assert broker_rows(settings, "t1") == [True]


def test_second_up_on_the_same_data_folder_is_refused(settings: Settings) -> None:
    with exclusive(settings.data_dir), pytest.raises(RuntimeError, match="another asyncml up"):
        with exclusive(settings.data_dir):
            pass
