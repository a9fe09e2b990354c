"""The embedded broker's start-up recovery, on a real SQLite broker file."""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest
from kombu import Connection, Exchange
from kombu import Queue as KombuQueue

from asyncml.engine import Engine
from asyncml.engine.embedded import broker_url
from asyncml.engine.embedded_upkeep import exclusive, recover_unacked, sweep_finished
from asyncml.engine.publish import send_bounded
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


def test_outcome_taken_back_by_a_power_cut_runs_again_at_the_next_up(
    engine: Engine, store: SqliteTaskStore, settings: Settings
) -> None:
    # An outcome is committed without an fsync; the message it answered must therefore
    # outlive its acknowledgement, so that recovery finds the task unfinished and reruns it.
    publish(engine, store, "t1")
    store.start("t1", utcnow())
    with Connection(broker_url(settings.data_dir)) as connection:
        channel: Any = connection.default_channel
        message = channel.basic_get("audio")
        assert message is not None
        channel.basic_ack(message.delivery_tag)
    assert broker_rows(settings, "t1") == [False]  # acknowledged, still there
    assert recover_unacked(settings, store) == (1, 0)  # the record says STARTED: rerun
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


def test_sweep_deletes_the_fetched_messages_of_final_or_gone_tasks_only(
    engine: Engine, store: SqliteTaskStore, settings: Settings
) -> None:
    for task_id in ("done", "running", "cancelled", "gone"):
        publish(engine, store, task_id)
    for task_id in ("done", "running", "gone"):
        hide(settings, task_id)  # fetched by a worker
    store.finish("done", TaskStatus.SUCCESS, utcnow(), result={"audio_length": 1.0})
    store.start("running", utcnow())
    store.cancel("cancelled", utcnow())  # final, but its message was never fetched
    store.delete("gone")  # expired, or its submission was undone
    assert sweep_finished(settings, store) == 2
    assert broker_rows(settings, "done") == []
    assert broker_rows(settings, "gone") == []
    assert broker_rows(settings, "running") == [False]  # its worker still holds it
    assert broker_rows(settings, "cancelled") == [True]  # a worker fetches it and skips it


def test_sweep_deletes_only_messages_whose_outcome_it_synced_first(
    engine: Engine, settings: Settings
) -> None:
    # An outcome is committed without an fsync: were its message deleted before the
    # outcome is on disk, a power cut could leave the task unfinished with no message to
    # run it again. So the sweep reads which tasks are final, syncs, then deletes only
    # those: an outcome committed after its read waits for the next sweep.
    at_sync: list[list[bool]] = []

    class FinishingDuringTheSync(SqliteTaskStore):
        def make_durable(self) -> None:
            at_sync.append(broker_rows(settings, "first"))
            self.finish("late", TaskStatus.SUCCESS, utcnow(), result={"audio_length": 1.0})
            super().make_durable()

    store = FinishingDuringTheSync(settings.store_path(), ttl_s=settings.result_ttl_s)
    try:
        for task_id in ("first", "late"):
            publish(engine, store, task_id)
            hide(settings, task_id)
        store.finish("first", TaskStatus.SUCCESS, utcnow(), result={"audio_length": 1.0})
        assert sweep_finished(settings, store) == 1
        assert at_sync == [[False]]  # the synced outcome's message was still there
        assert broker_rows(settings, "first") == []
        assert broker_rows(settings, "late") == [False]  # not synced by that sweep: kept
    finally:
        store.close()


def test_sweep_leaves_webhook_attempts_to_the_next_start(
    engine: Engine, store: SqliteTaskStore, settings: Settings
) -> None:
    # A worker holds a webhook attempt through its back-off: only recovery may judge it.
    send_bounded(engine.celery, settings, "asyncml.notice", [], queue="audio", task_id="notice:n1")
    hide(settings, "notice:n1")
    assert sweep_finished(settings, store) == 0
    assert broker_rows(settings, "notice:n1") == [False]


def test_second_up_on_the_same_data_folder_is_refused(settings: Settings) -> None:
    with exclusive(settings.data_dir), pytest.raises(RuntimeError, match="another asyncml up"):
        with exclusive(settings.data_dir):
            pass


def _publish_once(data_dir: str, task_id: str, start: Any, outcome: Any) -> None:
    """One process of a fresh host: open the broker when told, publish one message."""
    settings = Settings(data_dir=Path(data_dir), _env_file=None)
    engine = Engine(settings, default_registry())
    start.wait()
    try:
        engine.publish(
            default_registry().get("audio.length"), task_id, {"audio_url": "http://a.test/a.wav"}
        )
    except Exception as exc:
        outcome.put(f"{task_id}: {exc}")
    else:
        outcome.put(None)
    finally:
        engine.close()


def _failures_of_processes_started_together(
    target: Callable[..., None], args: list[tuple[Any, ...]]
) -> list[str]:
    """One forked process per ``args``, each handed a start event and an outcome queue
    after its own arguments; released together; the failures they report (None is none)."""
    context = multiprocessing.get_context("fork")
    start, outcome = context.Event(), context.Queue()
    children = [context.Process(target=target, args=(*a, start, outcome)) for a in args]
    for child in children:
        child.start()
    start.set()
    failures = [outcome.get(timeout=60) for _ in children]
    for child in children:
        child.join(60)
    return [failure for failure in failures if failure]


def test_processes_opening_a_fresh_broker_together_all_publish(settings: Settings) -> None:
    # The API and the workers of `asyncml up` open a fresh data folder's broker at once;
    # only one may create its tables and queue rows, and no publish may fail for it.
    rounds, processes = 3, 6
    for round_ in range(rounds):
        data_dir = settings.data_dir / f"fresh-{round_}"
        data_dir.mkdir(parents=True)
        args = [(str(data_dir), f"t{i}") for i in range(processes)]
        assert _failures_of_processes_started_together(_publish_once, args) == []
        conn = sqlite3.connect(data_dir / "broker.sqlite3")
        try:
            (count,) = conn.execute("SELECT count(*) FROM kombu_message").fetchone()
        finally:
            conn.close()
        assert count == processes


def test_one_channel_used_from_two_threads_keeps_every_message(settings: Settings) -> None:
    # A worker's consumer thread polls while Celery's pool thread requeues a lost task's
    # message through the same channel; both must work and no message may go missing.
    settings.data_dir.mkdir(parents=True)
    connection = Connection(broker_url(settings.data_dir))
    channel: Any = connection.channel()
    channel._new_queue("q")
    errors: list[str] = []
    counts = {"put": 0, "got": 0}
    until = time.monotonic() + 1.5

    def consume() -> None:
        while time.monotonic() < until:
            try:
                channel._get("q")
                counts["got"] += 1
            except Empty:
                pass
            except Exception as exc:  # what the test is about: none may happen
                errors.append(repr(exc))

    def requeue() -> None:
        while time.monotonic() < until:
            try:
                channel._put("q", {"body": "x", "headers": {}, "properties": {}})
                counts["put"] += 1
            except Exception as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=consume), threading.Thread(target=requeue)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    left = channel._size("q")
    connection.release()
    assert errors == []
    assert counts["put"] > 0 and counts["got"] + left == counts["put"]


class _Consumer:
    """A kombu consumer of queue ``q`` on the embedded broker, draining in a thread, that
    says when it has looked at SQLite, found nothing, and started waiting for a ring."""

    def __init__(self, settings: Settings, fallback_s: float) -> None:
        from asyncml.store.sqlite.doorbell import wake_dir

        self.connection = Connection(
            broker_url(settings.data_dir), transport_options={"polling_interval": fallback_s}
        )
        self.got: Queue[tuple[Any, float]] = Queue()
        self.waiting = threading.Event()
        self._stop = threading.Event()
        exchange = Exchange("q", type="direct")
        self.queue = KombuQueue("q", exchange, routing_key="q")
        self._consumer = self.connection.Consumer(
            [self.queue], callbacks=[self._on_message], accept=["json"]
        )
        self._consumer.consume()
        transport: Any = self.connection.transport
        bell = transport.doorbell(wake_dir(settings.data_dir / "broker.sqlite3"))
        wait = bell.wait

        def announced_wait(timeout_s: float) -> bool:
            self.waiting.set()
            return bool(wait(timeout_s))

        bell.wait = announced_wait
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _on_message(self, body: Any, message: Any) -> None:
        message.ack()
        if body == "stop":
            self._stop.set()
        else:
            self.got.put((body, time.monotonic()))

    def _drain(self) -> None:
        # A long drain, as Celery's loop is one: only a ring or the fallback ends its wait.
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=120)

    def close(self, settings: Settings) -> None:
        _publish(settings, "stop")
        self._thread.join(timeout=150)
        self.connection.release()


def _publish(settings: Settings, body: Any) -> float:
    """Publish from a connection of its own, as the API does; returns when it was sent."""
    with Connection(broker_url(settings.data_dir)) as connection:
        exchange = Exchange("q", type="direct")
        producer = connection.Producer(serializer="json")
        sent = time.monotonic()
        producer.publish(
            body, exchange=exchange, routing_key="q", declare=[KombuQueue("q", exchange, "q")]
        )
    return sent


def test_idle_worker_takes_a_published_message_at_once_not_at_its_fallback_poll(
    settings: Settings,
) -> None:
    settings.data_dir.mkdir(parents=True)
    consumer = _Consumer(settings, fallback_s=60.0)
    try:
        assert consumer.waiting.wait(30), "the consumer never started waiting"
        sent = _publish(settings, {"n": 1})
        body, received = consumer.got.get(timeout=5)  # a twelfth of the fallback interval
    finally:
        consumer.close(settings)
    assert body == {"n": 1}
    assert received - sent < 5


def test_worker_that_missed_its_wake_up_takes_the_message_at_its_fallback_poll(
    settings: Settings,
) -> None:
    from asyncml.store.sqlite.doorbell import wake_dir

    settings.data_dir.mkdir(parents=True)
    consumer = _Consumer(settings, fallback_s=0.5)
    try:
        assert consumer.waiting.wait(30), "the consumer never started waiting"
        # Its registration is gone (a data folder cleaned, a ring lost): nobody is rung.
        shutil.rmtree(wake_dir(settings.data_dir / "broker.sqlite3"))
        _publish(settings, {"n": 2})
        body, _ = consumer.got.get(timeout=10)
    finally:
        consumer.close(settings)
    assert body == {"n": 2}


def test_publisher_forgets_a_consumer_whose_process_is_gone(settings: Settings) -> None:
    from asyncml.store.sqlite.doorbell import ring, wake_dir

    folder = wake_dir(settings.data_dir / "broker.sqlite3") / "q"
    folder.mkdir(parents=True)
    (folder / "999999999-deadbeef").touch()  # no socket of that name exists
    assert ring(folder.parent, "q") == 0
    assert list(folder.iterdir()) == []


def _open_store_once(path: str, start: Any, outcome: Any) -> None:
    start.wait(30)
    try:
        SqliteTaskStore(Path(path), ttl_s=60).close()
    except Exception as exc:
        outcome.put(repr(exc))
    else:
        outcome.put(None)


def test_processes_opening_a_fresh_task_store_together_all_open_it(settings: Settings) -> None:
    # Each process of `asyncml up` opens the task store of a fresh data folder and adds
    # the columns of later versions; two finding a column missing at once must both open.
    for round_ in range(5):
        path = settings.data_dir / f"fresh-store-{round_}" / "tasks.sqlite3"
        args = [(str(path),) for _ in range(6)]
        assert _failures_of_processes_started_together(_open_store_once, args) == []


def _queued(task_id: str, owner: str = "") -> TaskRecord:
    return TaskRecord(
        id=task_id, kind="debug.echo", status=TaskStatus.QUEUED, submitted_at=utcnow(), owner=owner
    )


def test_submissions_committed_together_still_respect_the_open_task_cap(
    settings: Settings,
) -> None:
    store = SqliteTaskStore(settings.store_path(), ttl_s=60)
    try:
        made = store.create_many([(_queued(f"t{i}", owner="alice"), 2) for i in range(3)])
        assert made == [True, True, False]
        assert store.get("t2") is None
    finally:
        store.close()


def test_submissions_arriving_together_share_a_commit_and_each_gets_its_answer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from asyncml.store.sqlite import AsyncSqliteTaskStore

    sync = SqliteTaskStore(settings.store_path(), ttl_s=60)
    batches: list[int] = []
    create_many = sync.create_many

    def counting(batch: list[tuple[TaskRecord, int]]) -> list[bool]:
        batches.append(len(batch))
        return create_many(batch)

    monkeypatch.setattr(sync, "create_many", counting)
    store = AsyncSqliteTaskStore(sync)

    async def submit() -> list[bool]:
        try:
            return await asyncio.gather(
                *(store.create(_queued(f"t{i}", owner="bob"), max_open=3) for i in range(5))
            )
        finally:
            await store.close()

    assert asyncio.run(submit()) == [True, True, True, False, False]
    assert sum(batches) == 5
    assert len(batches) < 5  # those that came during the first commit went in one more


def test_a_start_is_not_synced_and_leaves_the_store_reporting_durable(settings: Settings) -> None:
    store = SqliteTaskStore(settings.store_path(), ttl_s=60)
    try:
        store.create(_queued("t1"))
        assert store.start("t1", utcnow(), worker="w") == 1
        assert store.durability().durable
        assert store.durability().settings["synchronous"] == "FULL"
    finally:
        store.close()


def test_a_long_poll_is_woken_by_the_finish_of_another_process_not_by_its_fallback_poll(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from asyncml.store.sqlite import aio

    monkeypatch.setattr(aio, "_FALLBACK_S", 3600.0)  # only a ring can wake the watcher
    api = aio.AsyncSqliteTaskStore(SqliteTaskStore(settings.store_path(), ttl_s=60))
    worker = SqliteTaskStore(settings.store_path(), ttl_s=60)
    worker.create(_queued("t1"))
    listening = wake_dir_of(settings) / "@tasks"

    def finish_once_listened() -> None:
        deadline = time.monotonic() + 30
        while not (listening.exists() and any(listening.iterdir())):
            if time.monotonic() > deadline:
                raise AssertionError("the API's watcher never listened")
            threading.Event().wait(0.01)
        worker.finish("t1", TaskStatus.SUCCESS, utcnow(), result={"ok": True})

    async def long_poll() -> TaskRecord | None:
        try:
            finisher = asyncio.get_running_loop().run_in_executor(None, finish_once_listened)
            record = await api.wait("t1", timeout_s=60)
            await finisher
            return record
        finally:
            await api.close()

    try:
        record = asyncio.run(long_poll())
    finally:
        worker.close()
    assert record is not None and record.status == TaskStatus.SUCCESS
    assert list(listening.iterdir()) == []  # nobody waits: nobody listens


def test_finals_among_gives_the_records_of_final_tasks_and_none_for_gone_ones(
    settings: Settings,
) -> None:
    store = SqliteTaskStore(settings.store_path(), ttl_s=60)
    try:
        for task_id in ("queued", "started", "done", "failed"):
            store.create(_queued(task_id))
        store.start("started", utcnow(), worker="w")
        store.finish("done", TaskStatus.SUCCESS, utcnow(), result={"ok": True})
        store.finish("failed", TaskStatus.FAILURE, utcnow())
        finals = store.finals_among(["queued", "started", "done", "failed", "gone"])
    finally:
        store.close()
    assert set(finals) == {"done", "failed", "gone"}
    done, failed = finals["done"], finals["failed"]
    assert done is not None and done.status == TaskStatus.SUCCESS and done.result == {"ok": True}
    assert failed is not None and failed.status == TaskStatus.FAILURE
    assert finals["gone"] is None


def test_a_woken_long_poll_answers_with_what_the_watcher_read_not_a_read_of_its_own(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from asyncml.store.sqlite import aio

    sync = SqliteTaskStore(settings.store_path(), ttl_s=60)
    api = aio.AsyncSqliteTaskStore(sync)
    worker = SqliteTaskStore(settings.store_path(), ttl_s=60)
    worker.create(_queued("t1"))
    reads: list[str] = []
    get = sync.get

    def counting_get(task_id: str) -> TaskRecord | None:
        reads.append(task_id)
        return get(task_id)

    monkeypatch.setattr(sync, "get", counting_get)

    async def long_poll() -> TaskRecord | None:
        try:
            waiting = asyncio.ensure_future(api.wait("t1", timeout_s=60))
            while not reads:  # its first read, before it waits
                await asyncio.sleep(0.01)
            worker.finish("t1", TaskStatus.SUCCESS, utcnow(), result={"ok": True})
            return await waiting
        finally:
            await api.close()

    try:
        record = asyncio.run(long_poll())
    finally:
        worker.close()
    assert record is not None and record.status == TaskStatus.SUCCESS
    assert reads == ["t1"]  # the one before waiting


def wake_dir_of(settings: Settings) -> Path:
    from asyncml.store.sqlite.doorbell import wake_dir

    return wake_dir(settings.store_path())
