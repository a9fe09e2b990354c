"""The dead-letter queue on the embedded store: what a poison task leaves, and `asyncml dlq`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel
from typer.testing import CliRunner

from asyncml.cli import app
from asyncml.cli.dlq import replay
from asyncml.engine import Engine
from asyncml.engine.runtime import WorkerRuntime
from asyncml.errors import ServiceUnavailable
from asyncml.kinds import TaskContext, TaskKind, task_kind
from asyncml.registry import default_registry
from asyncml.settings import Settings
from asyncml.store import Callback, ErrorBody, TaskRecord, TaskStatus, open_async_store, utcnow
from asyncml.store.dead_letters import DEAD_LETTER_TTL_S, DeadLetter
from asyncml.store.sqlite import SqliteTaskStore
from asyncml.submission import Submitter

runner = CliRunner()


class In(BaseModel):
    n: int


class Out(BaseModel):
    n: int


@task_kind("test.poison", queue="test")
def poison(inp: In, ctx: TaskContext) -> Out:
    raise AssertionError("a task given up on must not run")


def failing(inp: In, ctx: TaskContext) -> Out:
    raise ValueError("an ordinary failure")


def entry(task_id: str = "t1", *, kind: str = "test.poison", ago_s: float = 0) -> DeadLetter:
    return DeadLetter(
        task_id=task_id,
        kind=kind,
        payload={"n": 7},
        attempts=3,
        error=ErrorBody(type="worker_lost", message="died each time", attempts=3),
        dead_at=utcnow() - timedelta(seconds=ago_s),
    )


def queued(store: SqliteTaskStore, task_id: str = "t1", **fields: Any) -> str:
    store.create(
        TaskRecord(
            id=task_id,
            kind="test.poison",
            status=TaskStatus.QUEUED,
            submitted_at=utcnow(),
            **fields,
        )
    )
    return task_id


def killed_every_time(store: SqliteTaskStore, kind: TaskKind[Any, Any], task_id: str) -> None:
    for _ in range(kind.limits.max_attempts):  # deliveries whose worker process was killed
        store.start(task_id, utcnow())


@pytest.fixture
def runtime(settings: Settings) -> Iterator[WorkerRuntime]:
    rt = WorkerRuntime(settings, store_retry_s=0.2)
    yield rt
    rt.store.close()


@pytest.fixture
def cli(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """`asyncml ...` on the test's embedded data folder, as an operator types it."""
    monkeypatch.chdir(tmp_path)  # no stray .env

    def invoke(*args: str, input: str | None = None) -> Any:
        env = {"ASYNCML_DATA_DIR": str(settings.data_dir)}
        return runner.invoke(app, list(args), env=env, input=input)

    return invoke


# --- the error body -----------------------------------------------------------------


def test_error_body_without_attempts_keeps_its_two_fields() -> None:
    body = ErrorBody(type="fetch_failed", message="HTTP 404")
    assert json.loads(body.model_dump_json()) == {"type": "fetch_failed", "message": "HTTP 404"}


def test_error_body_of_worker_lost_carries_its_attempts() -> None:
    body = ErrorBody(type="worker_lost", message="died", attempts=3)
    assert ErrorBody.model_validate_json(body.model_dump_json()).attempts == 3


# --- the store ----------------------------------------------------------------------


def test_entry_reads_back_whole(store: SqliteTaskStore) -> None:
    kept = entry().model_copy(
        update={"callback": Callback(url="http://127.0.0.1:9/h"), "owner": "k1"}
    )
    store.dead_letter_add(kept)
    assert store.dead_letter_get("t1") == kept


def test_listing_is_oldest_first_and_consumes_nothing(store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry("new", ago_s=1))
    store.dead_letter_add(entry("old", ago_s=60))
    assert [e.task_id for e in store.dead_letter_list()] == ["old", "new"]
    assert [e.task_id for e in store.dead_letter_list()] == ["old", "new"]
    assert store.dead_letter_count() == 2


def test_listing_pages_with_limit_and_offset(store: SqliteTaskStore) -> None:
    for i in range(5):
        store.dead_letter_add(entry(f"t{i}", ago_s=10 - i))
    assert [e.task_id for e in store.dead_letter_list(2, offset=2)] == ["t2", "t3"]


def test_adding_the_same_task_again_keeps_one_entry(store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry())
    store.dead_letter_add(entry())
    assert store.dead_letter_count() == 1


def test_entry_is_removed_once(store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry())
    assert store.dead_letter_remove("t1") is True
    assert store.dead_letter_remove("t1") is False
    assert store.dead_letter_get("t1") is None


def test_purge_removes_every_entry_and_counts_them(store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry("a"))
    store.dead_letter_add(entry("b"))
    assert store.dead_letter_purge() == 2
    assert store.dead_letter_list() == []


def test_entry_older_than_its_ttl_is_gone(store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry("stale", ago_s=DEAD_LETTER_TTL_S + 1))
    assert store.dead_letter_get("stale") is None
    assert store.dead_letter_list() == []
    assert store.dead_letter_count() == 0


# --- the worker's side --------------------------------------------------------------


def test_poison_task_ends_as_worker_lost_with_its_attempts(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    task_id = queued(store)
    killed_every_time(store, poison, task_id)
    runtime.execute(poison, task_id, {"n": 7})
    record = store.get(task_id)
    assert record is not None and record.error is not None
    assert record.status is TaskStatus.FAILURE
    assert (record.error.type, record.error.attempts) == ("worker_lost", 3)


def test_poison_task_reaches_the_dead_letter_queue_with_what_a_replay_needs(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    hook = Callback(url="http://127.0.0.1:9/hook")
    task_id = queued(store, callback=hook)
    killed_every_time(store, poison, task_id)
    runtime.execute(poison, task_id, {"n": 7})
    dead = store.dead_letter_get(task_id)
    assert dead is not None
    assert (dead.kind, dead.payload, dead.attempts) == ("test.poison", {"n": 7}, 3)
    assert dead.error.type == "worker_lost"
    assert dead.callback == hook


def test_dead_lettered_tasks_are_counted_by_kind(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    def counted() -> float:
        labels = {"kind": "test.poison"}
        return REGISTRY.get_sample_value("asyncml_tasks_dead_lettered_total", labels) or 0.0

    before = counted()
    task_id = queued(store)
    killed_every_time(store, poison, task_id)
    runtime.execute(poison, task_id, {"n": 7})
    assert counted() == before + 1


def test_ordinary_failure_does_not_reach_the_dead_letter_queue(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    kind = task_kind("test.poison", queue="test")(failing)
    task_id = queued(store)
    runtime.execute(kind, task_id, {"n": 7})
    record = store.get(task_id)
    assert record is not None and record.status is TaskStatus.FAILURE
    assert store.dead_letter_count() == 0


def test_task_started_fewer_times_than_its_limit_is_not_dead_lettered(
    runtime: WorkerRuntime, store: SqliteTaskStore
) -> None:
    kind = task_kind("test.poison", queue="test")(failing)
    task_id = queued(store)
    store.start(task_id, utcnow())  # one worker death: the next delivery runs it
    runtime.execute(kind, task_id, {"n": 7})
    assert store.dead_letter_count() == 0


class _DeadLetterWriteFails(SqliteTaskStore):
    def dead_letter_add(self, entry: DeadLetter) -> None:
        raise ServiceUnavailable("result store (Redis) unavailable: ConnectionError")


def test_dead_letter_write_that_fails_is_logged_and_the_task_stays_final(
    settings: Settings, store: SqliteTaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = WorkerRuntime(settings, store_retry_s=0.2)
    runtime.store  # noqa: B018  # open the per-process store, then swap in a failing one
    runtime._store = _DeadLetterWriteFails(settings.store_path(), ttl_s=60)
    task_id = queued(store)
    killed_every_time(store, poison, task_id)
    with caplog.at_level(logging.ERROR):
        runtime.execute(poison, task_id, {"n": 7})  # no Reject: the message must not return
    record = store.get(task_id)
    assert record is not None and record.status is TaskStatus.FAILURE
    assert "NOT in the dead-letter queue" in caplog.text


# --- replaying ----------------------------------------------------------------------


class _BrokerDown(Engine):
    def publish(
        self,
        kind: TaskKind[Any, Any],
        task_id: str,
        payload: dict[str, Any],
        notices: Sequence[str] | None = None,
    ) -> None:
        raise ServiceUnavailable("the broker is unavailable, nothing queued")


def test_replay_that_cannot_publish_keeps_the_entry_and_leaves_no_record(
    settings: Settings, store: SqliteTaskStore
) -> None:
    store.dead_letter_add(entry(kind="audio.length"))
    engine = _BrokerDown(settings, default_registry())

    async def replay_once() -> None:
        async_store = open_async_store(settings)
        try:
            await replay(
                store, Submitter(settings, engine, async_store), entry(kind="audio.length")
            )
        finally:
            await async_store.close()

    try:
        with pytest.raises(ServiceUnavailable):
            asyncio.run(replay_once())
    finally:
        engine.close()
    assert store.dead_letter_get("t1") is not None
    assert store._execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0


# --- asyncml dlq --------------------------------------------------------------------


def test_list_shows_each_entry(cli: Callable[..., Any], store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry(kind="audio.length"))
    shown = cli("dlq", "list")
    assert shown.exit_code == 0, shown.output
    assert "t1" in shown.output and "audio.length" in shown.output and "worker_lost" in shown.output


def test_list_as_json_gives_whole_entries(cli: Callable[..., Any], store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry(kind="audio.length"))
    shown = cli("dlq", "list", "--json")
    assert shown.exit_code == 0, shown.output
    (listed,) = json.loads(shown.stdout)
    assert (listed["task_id"], listed["payload"], listed["attempts"]) == ("t1", {"n": 7}, 3)


def test_retry_submits_a_new_task_and_removes_the_entry(
    cli: Callable[..., Any], store: SqliteTaskStore, queued_messages: Callable[[], int]
) -> None:
    old_id = "t1"
    store.create(
        TaskRecord(id=old_id, kind="audio.length", status=TaskStatus.QUEUED, submitted_at=utcnow())
    )
    store.finish(old_id, TaskStatus.FAILURE, utcnow(), error=entry().error)
    store.dead_letter_add(entry(old_id, kind="audio.length"))
    done = cli("dlq", "retry", old_id, "--json")
    assert done.exit_code == 0, done.output
    (replayed,) = json.loads(done.stdout)["replayed"]
    new = store.get(replayed["new_task_id"])
    assert new is not None and new.status is TaskStatus.QUEUED and new.kind == "audio.length"
    assert queued_messages() == 1
    assert store.dead_letter_get(old_id) is None
    old = store.get(old_id)
    assert old is not None and old.status is TaskStatus.FAILURE  # state only moves forward


@pytest.mark.parametrize("kind", ["model.iris", "debug.echo"])
def test_retry_replays_kinds_that_are_not_built_in(
    cli: Callable[..., Any],
    store: SqliteTaskStore,
    queued_messages: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """The CLI builds the registry the API and the workers build: model and debug kinds."""
    monkeypatch.setenv("ASYNCML_DEBUG_KINDS", "true")
    store.dead_letter_add(entry(kind=kind))
    done = cli("dlq", "retry", "t1", "--json")
    assert done.exit_code == 0, done.output
    (replayed,) = json.loads(done.stdout)["replayed"]
    new = store.get(replayed["new_task_id"])
    assert new is not None and new.kind == kind and new.status is TaskStatus.QUEUED
    assert queued_messages() == 1


def test_retry_prints_old_id_then_new_id(cli: Callable[..., Any], store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry(kind="audio.length"))
    done = cli("dlq", "retry", "--all")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("t1 -> ")


def test_retry_of_an_unknown_id_exits_2(cli: Callable[..., Any]) -> None:
    done = cli("dlq", "retry", "no-such-id")
    assert done.exit_code == 2
    assert "task_not_found" in done.output


def test_retry_of_an_entry_whose_kind_is_gone_keeps_it(
    cli: Callable[..., Any], store: SqliteTaskStore
) -> None:
    store.dead_letter_add(entry(kind="gone.kind"))
    assert cli("dlq", "retry", "t1").exit_code == 2
    assert store.dead_letter_get("t1") is not None


def test_retry_needs_an_id_or_all(cli: Callable[..., Any]) -> None:
    assert cli("dlq", "retry").exit_code == 2
    assert cli("dlq", "retry", "t1", "--all").exit_code == 2


def test_purge_of_one_id_removes_only_it(cli: Callable[..., Any], store: SqliteTaskStore) -> None:
    store.dead_letter_add(entry("a"))
    store.dead_letter_add(entry("b"))
    assert cli("dlq", "purge", "a").exit_code == 0
    assert [e.task_id for e in store.dead_letter_list()] == ["b"]


def test_purge_all_asks_first_and_a_no_purges_nothing(
    cli: Callable[..., Any], store: SqliteTaskStore
) -> None:
    store.dead_letter_add(entry())
    done = cli("dlq", "purge", "--all", input="n\n")
    assert done.exit_code == 2
    assert store.dead_letter_count() == 1


def test_purge_all_with_yes_empties_the_queue(
    cli: Callable[..., Any], store: SqliteTaskStore
) -> None:
    store.dead_letter_add(entry("a"))
    store.dead_letter_add(entry("b"))
    done = cli("dlq", "purge", "--all", "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"purged": 2}
    assert store.dead_letter_count() == 0
