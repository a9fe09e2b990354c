"""The task store's promises, held by both backends: embedded SQLite and real Redis."""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from asyncml.store import (
    AsyncTaskStore,
    Callback,
    Delivery,
    ErrorBody,
    TaskRecord,
    TaskStatus,
    TaskStore,
    utcnow,
)
from asyncml.store.dead_letters import DEAD_LETTER_TTL_S, DeadLetter
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


@pytest.fixture
def store(stores: tuple[TaskStore, AsyncTaskStore]) -> TaskStore:
    return stores[0]


def new_task(store: TaskStore) -> str:
    task_id = str(uuid.uuid4())
    store.create(
        TaskRecord(id=task_id, kind="audio.length", status=TaskStatus.QUEUED, submitted_at=utcnow())
    )
    return task_id


def test_unknown_id_reads_as_none(store: TaskStore) -> None:
    assert store.get("no-such-id") is None


def test_unknown_id_cannot_start_nor_be_cancelled(store: TaskStore) -> None:
    assert store.start("no-such-id", utcnow()) == 0
    assert store.cancel("no-such-id", utcnow()).record is None


def test_created_task_reads_back_queued(store: TaskStore) -> None:
    task = store.get(new_task(store))
    assert task is not None and task.status is TaskStatus.QUEUED


def test_cancelled_task_cannot_start(store: TaskStore) -> None:
    task_id = new_task(store)
    outcome = store.cancel(task_id, utcnow())
    assert outcome.done
    assert outcome.record is not None and outcome.record.status is TaskStatus.CANCELLED
    assert store.start(task_id, utcnow()) == 0


def test_second_cancel_reports_nothing_done(store: TaskStore) -> None:
    task_id = new_task(store)
    store.cancel(task_id, utcnow())
    assert store.cancel(task_id, utcnow()).done is False


def test_started_task_cannot_be_cancelled(store: TaskStore) -> None:
    task_id = new_task(store)
    assert store.start(task_id, utcnow()) == 1
    outcome = store.cancel(task_id, utcnow())
    assert not outcome.done
    assert outcome.record is not None and outcome.record.status is TaskStatus.STARTED


def test_redelivered_task_starts_again_with_the_next_attempt_number(store: TaskStore) -> None:
    task_id = new_task(store)
    assert [store.start(task_id, utcnow()) for _ in range(3)] == [1, 2, 3]


def test_finished_task_is_never_run_again_nor_overwritten(store: TaskStore) -> None:
    task_id = new_task(store)
    store.start(task_id, utcnow())
    assert store.finish(task_id, TaskStatus.SUCCESS, utcnow(), result={"audio_length": 1.5})
    assert store.start(task_id, utcnow()) == 0
    assert store.finish(task_id, TaskStatus.FAILURE, utcnow(), result=None) is False
    record = store.get(task_id)
    assert record is not None
    assert record.status is TaskStatus.SUCCESS
    assert record.result == {"audio_length": 1.5}


def _race_start_and_cancel(store: TaskStore, task_id: str) -> tuple[bool, bool]:
    barrier = threading.Barrier(2)
    outcome: dict[str, bool] = {}

    def start() -> None:
        barrier.wait()
        outcome["started"] = store.start(task_id, utcnow()) > 0

    def cancel() -> None:
        barrier.wait()
        outcome["cancelled"] = store.cancel(task_id, utcnow()).done

    threads = [threading.Thread(target=start), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome["started"], outcome["cancelled"]


def test_cancel_racing_start_has_exactly_one_winner(store: TaskStore) -> None:
    for _ in range(30):
        started, cancelled = _race_start_and_cancel(store, new_task(store))
        assert started != cancelled


def test_wait_returns_when_another_process_finishes_the_task(
    stores: tuple[TaskStore, AsyncTaskStore],
) -> None:
    sync, async_store = stores
    task_id = new_task(sync)
    sync.start(task_id, utcnow())

    async def scenario() -> TaskRecord | None:
        waiting = asyncio.create_task(async_store.wait(task_id, 20))
        async with asyncio.timeout(5):  # the waiter is registered: the finish comes after
            while async_store.watchers() == 0:
                await asyncio.sleep(0.001)
        await asyncio.to_thread(sync.finish, task_id, TaskStatus.SUCCESS, utcnow(), result={"x": 1})
        record = await asyncio.wait_for(waiting, 5)
        await asyncio.wait_for(async_store.close(), 5)  # a closed store stops its listener
        return record

    record = asyncio.run(scenario())
    assert record is not None and record.status is TaskStatus.SUCCESS


def test_wait_on_a_finished_task_returns_at_once(
    stores: tuple[TaskStore, AsyncTaskStore],
) -> None:
    sync, async_store = stores
    task_id = new_task(sync)
    sync.finish(task_id, TaskStatus.FAILURE, utcnow())

    async def scenario() -> TaskRecord | None:
        record = await asyncio.wait_for(async_store.wait(task_id, 20), 2)
        await asyncio.wait_for(async_store.close(), 5)  # a closed store stops its listener
        return record

    record = asyncio.run(scenario())
    assert record is not None and record.status is TaskStatus.FAILURE


def test_cache_keeps_a_value(store: TaskStore) -> None:
    key = f"test:{uuid.uuid4()}"
    assert store.cache_get(key) is None
    store.cache_set(key, '{"numbers": [1, 2, 3, 4, 5]}')
    assert store.cache_get(key) == '{"numbers": [1, 2, 3, 4, 5]}'


def test_reserved_slots_are_spaced_by_the_interval(store: TaskStore) -> None:
    key = f"test:{uuid.uuid4()}"
    waits = [store.reserve_slot(key, 10.0) for _ in range(3)]
    assert waits[0] == 0
    assert 9.5 < waits[1] <= 10.0
    assert 19.5 < waits[2] <= 20.0


def test_slots_reserved_from_many_threads_never_collide(store: TaskStore) -> None:
    key = f"test:{uuid.uuid4()}"
    waits: list[float] = []
    lock = threading.Lock()

    def book() -> None:
        wait = store.reserve_slot(key, 1.0)
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=book) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(waits)
    # 8 distinct slots, one second apart (give or take the time the bookings took).
    assert all(0.8 < b - a < 1.2 for a, b in itertools.pairwise(ordered))


def test_callback_and_delivery_state_are_kept(store: TaskStore) -> None:
    task_id = str(uuid.uuid4())
    store.create(
        TaskRecord(
            id=task_id,
            kind="audio.length",
            status=TaskStatus.QUEUED,
            submitted_at=utcnow(),
            callback=Callback(url="http://127.0.0.1:9/hook", events=["started", "completed"]),
        )
    )
    store.set_delivery(task_id, "completed", Delivery(state="pending", attempts=1, last_status=500))
    store.set_delivery(
        task_id, "completed", Delivery(state="delivered", attempts=2, last_status=200)
    )
    record = store.get(task_id)
    assert record is not None and record.callback is not None
    assert record.callback.events == ["started", "completed"]
    assert record.deliveries["completed"].state == "delivered"
    assert record.deliveries["completed"].attempts == 2


def test_idempotency_key_is_bound_once(stores: tuple[TaskStore, AsyncTaskStore]) -> None:
    _, async_store = stores
    key = f"key-{uuid.uuid4()}"

    async def scenario() -> list[tuple[str, str] | None]:
        outcomes = [
            await async_store.claim_key(key, "print-a", "task-1", 60),
            await async_store.claim_key(key, "print-b", "task-2", 60),
        ]
        await async_store.release_key(key)
        outcomes.append(await async_store.claim_key(key, "print-c", "task-3", 60))
        await asyncio.wait_for(async_store.close(), 5)  # a closed store stops its listener
        return outcomes

    assert asyncio.run(scenario()) == [None, ("task-1", "print-a"), None]


# --- dead-letter queue ---------------------------------------------------------------


def dead_letter(task_id: str | None = None, *, ago_s: float = 0) -> DeadLetter:
    return DeadLetter(
        task_id=task_id or str(uuid.uuid4()),
        kind="audio.length",
        payload={"audio_url": "http://127.0.0.1:9/a.wav"},
        attempts=3,
        error=ErrorBody(type="worker_lost", message="its worker died each time", attempts=3),
        dead_at=utcnow() - timedelta(seconds=ago_s),
        callback=Callback(url="http://127.0.0.1:9/hook", events=["completed"]),
        owner="key-1",
    )


def test_dead_letter_reads_back_whole(store: TaskStore) -> None:
    entry = dead_letter()
    store.dead_letter_add(entry)
    assert store.dead_letter_get(entry.task_id) == entry
    assert store.dead_letter_get("no-such-id") is None


def test_dead_letters_list_oldest_first_and_reading_consumes_nothing(store: TaskStore) -> None:
    older, newer = dead_letter(ago_s=30), dead_letter(ago_s=20)
    store.dead_letter_add(newer)
    store.dead_letter_add(older)
    mine = {older.task_id, newer.task_id}
    for _ in range(2):
        listed = [e.task_id for e in store.dead_letter_list(1000) if e.task_id in mine]
        assert listed == [older.task_id, newer.task_id]


def _race_removes(store: TaskStore, task_id: str) -> list[bool]:
    barrier = threading.Barrier(2)
    removed: list[bool] = []

    def remove() -> None:
        barrier.wait()
        removed.append(store.dead_letter_remove(task_id))

    threads = [threading.Thread(target=remove) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return removed


def test_dead_letter_is_removed_by_exactly_one_of_two_racing_callers(store: TaskStore) -> None:
    for _ in range(10):
        entry = dead_letter()
        store.dead_letter_add(entry)
        assert sorted(_race_removes(store, entry.task_id)) == [False, True]
        assert store.dead_letter_get(entry.task_id) is None


def test_dead_letter_older_than_its_ttl_is_gone(store: TaskStore) -> None:
    stale = dead_letter(ago_s=DEAD_LETTER_TTL_S + 60)
    store.dead_letter_add(stale)
    assert store.dead_letter_get(stale.task_id) is None
    assert all(e.task_id != stale.task_id for e in store.dead_letter_list(1000))


def test_dead_letter_purge_empties_the_queue(store: TaskStore) -> None:
    store.dead_letter_add(dead_letter())
    store.dead_letter_add(dead_letter())
    assert store.dead_letter_purge() >= 2
    assert store.dead_letter_count() == 0
    assert store.dead_letter_list() == []


def test_wait_for_another_owner_returns_its_record_at_once_unwaited(
    stores: tuple[TaskStore, AsyncTaskStore],
) -> None:
    sync, async_store = stores
    task_id = new_task(sync)  # queued: a wait for its owner would last the whole 20 s

    async def scenario() -> TaskRecord | None:
        record = await asyncio.wait_for(async_store.wait(task_id, 20, owner="someone-else"), 2)
        await asyncio.wait_for(async_store.close(), 5)
        return record

    record = asyncio.run(scenario())
    assert record is not None and record.status is TaskStatus.QUEUED
    assert record.owner != "someone-else"  # the caller sees it is not theirs: a 404
