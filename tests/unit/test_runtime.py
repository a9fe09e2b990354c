"""What a worker process does around each task, without a broker: the state it records."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Reject, SoftTimeLimitExceeded
from pydantic import BaseModel

from asyncml.engine.notices import TaskNotices
from asyncml.engine.runtime import WorkerRuntime
from asyncml.errors import FetchBlocked, ServiceUnavailable
from asyncml.kinds import TaskContext, TaskKind, task_kind
from asyncml.settings import Settings
from asyncml.store import Callback, TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore


class In(BaseModel):
    n: int


class Out(BaseModel):
    double: int


calls: list[int] = []


@task_kind("test.double", queue="test")
def double(inp: In, ctx: TaskContext) -> Out:
    calls.append(inp.n)
    return Out(double=inp.n * 2)


def raising(exc: BaseException) -> TaskKind[In, Out]:
    def fail(inp: In, ctx: TaskContext) -> Out:
        raise exc

    return task_kind("test.fail", queue="test")(fail)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[WorkerRuntime]:
    calls.clear()
    rt = WorkerRuntime(settings, store_retry_s=0.2)
    yield rt
    rt.store.close()


def queued(store: SqliteTaskStore, task_id: str = "t1", **fields: Any) -> str:
    store.create(
        TaskRecord(id=task_id, kind="x", status=TaskStatus.QUEUED, submitted_at=utcnow(), **fields)
    )
    return task_id


def test_success_records_the_output_as_json(runtime: WorkerRuntime, store: SqliteTaskStore) -> None:
    runtime.execute(double, queued(store), {"n": 21})
    record = store.get("t1")
    assert record is not None
    assert record.status is TaskStatus.SUCCESS
    assert record.result == {"double": 42}
    assert record.started_at is not None and record.finished_at is not None


def test_typed_error_is_recorded_with_its_type(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    runtime.execute(raising(FetchBlocked("refusing 10.0.0.1")), queued(store), {"n": 1})
    record = store.get("t1")
    assert record is not None and record.error is not None
    assert record.status is TaskStatus.FAILURE
    assert (record.error.type, record.error.message) == ("blocked_destination", "refusing 10.0.0.1")


def test_unexpected_exception_is_recorded_readably(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    runtime.execute(raising(ZeroDivisionError("division by zero")), queued(store), {"n": 1})
    record = store.get("t1")
    assert record is not None and record.error is not None
    assert record.error.type == "internal_error"
    assert record.error.message == "ZeroDivisionError: division by zero"


def test_invalid_payload_is_recorded_as_input_invalid(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    runtime.execute(double, queued(store), {"n": "many"})
    record = store.get("t1")
    assert record is not None and record.error is not None
    assert record.error.type == "input_invalid"
    assert "n:" in record.error.message


def test_soft_time_limit_is_recorded_as_timeout(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    runtime.execute(raising(SoftTimeLimitExceeded()), queued(store), {"n": 1})
    record = store.get("t1")
    assert record is not None and record.error is not None
    assert record.error.type == "task_timeout"


def test_hard_time_limit_is_recorded_as_timeout(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    task_id = queued(store)
    store.start(task_id, utcnow())
    runtime.record_timeout(double, task_id)
    record = store.get(task_id)
    assert record is not None and record.error is not None
    assert record.status is TaskStatus.FAILURE
    assert record.error.type == "task_timeout"


def test_cancelled_task_is_skipped_without_running(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    task_id = queued(store)
    store.cancel(task_id, utcnow())
    runtime.execute(double, task_id, {"n": 1})
    assert calls == []
    record = store.get(task_id)
    assert record is not None and record.status is TaskStatus.CANCELLED


def test_finished_task_is_not_run_again_on_redelivery(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    task_id = queued(store)
    runtime.execute(double, task_id, {"n": 1})
    runtime.execute(double, task_id, {"n": 1})
    assert calls == [1]


class _StoreDownAtFinish(SqliteTaskStore):
    def finish(self, *args: Any, **kwargs: Any) -> bool:
        raise ServiceUnavailable("result store (Redis) unavailable: ConnectionError")


def test_result_that_cannot_be_stored_gives_the_message_back(
    settings: Settings, store: SqliteTaskStore
) -> None:
    runtime = WorkerRuntime(settings, store_retry_s=0.2)
    runtime.store  # noqa: B018  # open the per-process store, then swap in a failing one
    runtime._store = _StoreDownAtFinish(settings.store_path(), ttl_s=60)
    with pytest.raises(Reject) as rejected:
        runtime.execute(double, queued(store), {"n": 1})
    assert rejected.value.requeue is True  # type: ignore[attr-defined]  # set in __init__, not in the stubs


class _StoreDownTwiceAtFinish(SqliteTaskStore):
    attempts = 0

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        self.attempts += 1
        if self.attempts <= 2:
            raise ServiceUnavailable("result store (Redis) unavailable: ConnectionError")
        return super().finish(*args, **kwargs)


def test_result_is_stored_once_the_store_is_back_within_the_grace_period(
    settings: Settings, store: SqliteTaskStore
) -> None:
    runtime = WorkerRuntime(settings, store_retry_s=5)
    runtime.store  # noqa: B018  # open the per-process store, then swap in a flaky one
    flaky = runtime._store = _StoreDownTwiceAtFinish(settings.store_path(), ttl_s=60)
    task_id = queued(store)
    runtime.execute(double, task_id, {"n": 1})
    assert flaky.attempts == 3  # failed, failed, stored
    record = store.get(task_id)
    assert record is not None and record.status is TaskStatus.SUCCESS


def test_task_whose_worker_died_every_time_ends_as_worker_lost(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    task_id = queued(store)
    for _ in range(double.limits.max_attempts):  # deliveries whose worker was killed
        store.start(task_id, utcnow())
    runtime.execute(double, task_id, {"n": 1})
    assert calls == []
    record = store.get(task_id)
    assert record is not None and record.error is not None
    assert record.status is TaskStatus.FAILURE
    assert record.error.type == "worker_lost"


def test_redelivery_after_one_worker_death_runs_the_task(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    task_id = queued(store)
    store.start(task_id, utcnow())  # the first delivery's worker was killed
    runtime.execute(double, task_id, {"n": 4})
    assert calls == [4]
    record = store.get(task_id)
    assert record is not None and record.status is TaskStatus.SUCCESS


def test_download_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    from asyncml.kinds import SCRATCH_PREFIX, remove_orphaned_scratch

    mine = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-abc"
    gone = tmp_path / f"{SCRATCH_PREFIX}{_exited_pid()}-def"
    for folder in (mine, gone):
        folder.mkdir()
        (folder / "audio").write_bytes(b"x")
    assert remove_orphaned_scratch(tmp_path) == 1
    assert mine.exists()
    assert not gone.exists()


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


class _CountingStore(SqliteTaskStore):
    reads = 0

    def get(self, task_id: str) -> TaskRecord | None:
        self.reads += 1
        return super().get(task_id)


@pytest.mark.parametrize(
    ("events", "notices", "sent", "reads"),
    [
        ([], [], [], 0),  # the message says no notice is owed: the record is not read
        (["completed"], ["completed"], ["completed"], 1),
        (["started", "completed"], ["started", "completed"], ["started", "completed"], 2),
        (["completed"], None, ["completed"], 2),  # an older message that does not say
    ],
)
def test_notices_named_by_the_message_are_the_ones_looked_up_and_sent(
    settings: Settings,
    store: SqliteTaskStore,
    events: list[str],
    notices: list[str] | None,
    sent: list[str],
    reads: int,
) -> None:
    queued_notices: list[str] = []
    outlet = TaskNotices(lambda task_id, event, body, attempt, delay: queued_notices.append(event))
    runtime = WorkerRuntime(settings, notices=outlet, store_retry_s=0.2)
    runtime.store  # noqa: B018  # open the per-process store, then swap in a counting one
    runtime._store = counting = _CountingStore(settings.store_path(), ttl_s=60)
    callback = Callback(url="https://hooks.example/h", events=events)
    runtime.execute(double, queued(store, callback=callback), {"n": 1}, None, notices)
    assert queued_notices == sent
    assert counting.reads == reads
    record = store.get("t1")
    assert record is not None and record.status is TaskStatus.SUCCESS
