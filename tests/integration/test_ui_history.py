"""The dashboard's history in the store (store/history.py), on SQLite and a real Redis: the
same answers from both. Names are unique per test: the session's Redis is shared."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from asyncml.store import AsyncTaskStore, ErrorBody, TaskRecord, TaskStatus, TaskStore, utcnow
from asyncml.store.redis import AsyncRedisTaskStore, RedisTaskStore
from asyncml.store.sqlite import AsyncSqliteTaskStore, SqliteTaskStore

TTL = 3600


@pytest.fixture(params=["sqlite", "redis"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[TaskStore, AsyncTaskStore]]:
    if request.param == "sqlite":
        sync = SqliteTaskStore(tmp_path / "tasks.sqlite3", ttl_s=TTL)
        yield sync, AsyncSqliteTaskStore(SqliteTaskStore(tmp_path / "tasks.sqlite3", ttl_s=TTL))
        sync.close()
    else:
        url = request.getfixturevalue("redis_url")
        redis_sync = RedisTaskStore(url, ttl_s=TTL)
        yield redis_sync, AsyncRedisTaskStore(url, ttl_s=TTL)
        redis_sync.close()


def _task(store: TaskStore, kind: str, queue: str, owner: str = "", payload: str = "{}") -> str:
    task_id = str(uuid.uuid4())
    record = TaskRecord(
        id=task_id,
        kind=kind,
        status=TaskStatus.QUEUED,
        submitted_at=utcnow(),
        queue=queue,
        owner=owner,
        input_json=payload,
    )
    assert store.create(record)
    return task_id


def test_every_owners_tasks_are_listed_newest_first_by_kind_and_status(
    stores: tuple[TaskStore, AsyncTaskStore],
) -> None:
    store, aio = stores
    kind = f"ui.k{uuid.uuid4().hex[:8]}"
    ids = [_task(store, kind, "q", owner=f"owner{i % 2}") for i in range(5)]
    store.start(ids[1], utcnow())
    store.finish(ids[1], TaskStatus.FAILURE, utcnow(), error=ErrorBody(type="boom", message="x"))

    async def read() -> tuple[list[str], list[str], list[str]]:
        first = await aio.list_all(kind=kind, limit=3)
        rest = await aio.list_all(kind=kind, limit=3, cursor=first.next_cursor)
        failed = await aio.list_all(kind=kind, status=TaskStatus.FAILURE)
        await aio.close()
        return (
            [t.id for t in first.tasks],
            [t.id for t in rest.tasks],
            [t.id for t in failed.tasks],
        )

    first, rest, failed = asyncio.run(read())
    assert first + rest == ids[::-1]
    assert failed == [ids[1]]


def test_finished_tasks_are_read_by_finish_time_with_wait_run_and_error_type(
    stores: tuple[TaskStore, AsyncTaskStore],
) -> None:
    store, aio = stores
    kind = f"ui.k{uuid.uuid4().hex[:8]}"
    ok, failed, cancelled = (_task(store, kind, "q") for _ in range(3))
    store.start(ok, utcnow())
    store.finish(ok, TaskStatus.SUCCESS, utcnow(), result={"a": 1}, run_s=0.25)
    store.start(failed, utcnow())
    store.finish(failed, TaskStatus.FAILURE, utcnow(), error=ErrorBody(type="boom", message="x"))
    store.cancel(cancelled, utcnow())

    async def read() -> dict[str, tuple[str, float | None, float | None, str]]:
        found = await aio.finished_since(utcnow() - timedelta(minutes=5))
        await aio.close()
        return {t.task_id: (t.status, t.wait_s, t.run_s, t.error_type) for t in found}

    seen = asyncio.run(read())
    status, wait_s, run_s, _ = seen[ok]
    assert status == "SUCCESS" and wait_s is not None and run_s is not None
    assert seen[failed][0] == "FAILURE" and seen[failed][3] == "boom"
    assert seen[cancelled][0] == "CANCELLED" and seen[cancelled][2] is None


def test_queue_depths_and_the_kept_input_come_from_the_store(
    stores: tuple[TaskStore, AsyncTaskStore],
) -> None:
    store, aio = stores
    queue = f"uiq{uuid.uuid4().hex[:8]}"
    ids = [_task(store, "ui.depth", queue, payload='{"x": "<b>"}') for _ in range(3)]
    store.start(ids[0], utcnow())

    async def read() -> tuple[dict[str, int], str | None]:
        depths = await aio.queue_depths([queue, "uiq-none"])
        kept = await aio.task_input(ids[2])
        await aio.close()
        return depths, kept

    depths, kept = asyncio.run(read())
    assert depths == {queue: 2, "uiq-none": 0}
    assert kept == '{"x": "<b>"}'
