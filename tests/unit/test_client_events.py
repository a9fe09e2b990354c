"""The SDK's event stream (``events``, ``wait(on_event=...)``) against the real app
in-process (httpx.ASGITransport), no worker: a task's events are written to the store as a
worker would. ASGITransport hands over a response once the app has finished it, so these
tests read streams that end (a final task's history and ``completed``); live streams are
read in tests/integration/test_sdk_events.py."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import httpx
import pytest
from rich.console import Console
from rich.progress import Progress

from asyncml.api import create_app
from asyncml.client import AsyncClient, Task, _MapBoard
from asyncml.errors import AsyncmlError, ServiceUnavailable, TaskNotFound, TaskTimeout
from asyncml.records import TaskEvent
from asyncml.settings import Settings
from asyncml.store import TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore

pytestmark = pytest.mark.anyio

WAV_URL = "http://audio.example/a.wav"  # a name, judged by the worker; never fetched here
RESULT = {"audio_length": 3.0, "sample_rate": 16000, "channels": 1, "frames": 48000}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def app_transport(settings: Settings) -> AsyncIterator[httpx.ASGITransport]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests to the app and records them; ``cut`` answers the first event-stream
    request with only its first ``cut`` messages, as a connection dropped mid-stream;
    ``fail`` answers the first event-stream requests with a transport error or a response."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        cut: int | None = None,
        fail: list[httpx.Response | Exception] | None = None,
    ) -> None:
        self.inner = inner
        self.cut = cut
        self.fail = fail or []
        self.streams: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return await self.inner.handle_async_request(request)
        self.streams.append(request)
        if self.fail:
            answer = self.fail.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        response = await self.inner.handle_async_request(request)
        if self.cut is None:
            return response
        body = await response.aread()
        messages = body.replace(b"\r\n", b"\n").split(b"\n\n")
        kept = b"\n\n".join(messages[: self.cut]) + b"\n\n"
        self.cut = None
        return httpx.Response(response.status_code, headers=response.headers, content=kept)


async def finished_task(client: AsyncClient, store: SqliteTaskStore, steps: int = 2) -> str:
    """A task that started, reported ``steps`` steps and a log line, and succeeded."""
    task = await client.submit("audio.length", audio_url=WAV_URL)
    store.start(task.id, utcnow(), worker="w1@host")
    for done in range(1, steps + 1):
        progress = {"done": done, "total": steps, "message": f"step {done}"}
        store.add_events(
            task.id, [TaskEvent(task_id=task.id, type="progress", at=utcnow(), data=progress)]
        )
    log = {"level": "info", "message": "all steps done"}
    store.add_events(task.id, [TaskEvent(task_id=task.id, type="log", at=utcnow(), data=log)])
    store.finish(task.id, TaskStatus.SUCCESS, utcnow(), result=RESULT)
    return task.id


async def test_events_of_a_finished_task_are_its_history_then_completed(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    async with AsyncClient("http://testserver", transport=app_transport) as client:
        task_id = await finished_task(client, store)
        events = [event async for event in client.events(task_id)]
    assert [e.type for e in events] == ["started", "progress", "progress", "log", "completed"]
    assert all(isinstance(e, TaskEvent) and e.task_id == task_id for e in events)
    assert events[0].data["worker"] == "w1@host"
    assert [e.data["done"] for e in events if e.type == "progress"] == [1, 2]
    assert events[3].data == {"level": "info", "message": "all steps done"}
    assert events[-1].data["task"]["status"] == "SUCCESS"
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids))


async def test_events_resume_after_the_given_last_event_id(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    async with AsyncClient("http://testserver", transport=app_transport) as client:
        task_id = await finished_task(client, store)
        whole = [event async for event in client.events(task_id)]
        rest = [event async for event in client.events(task_id, last_event_id=whole[1].id)]
    assert [e.id for e in rest] == [e.id for e in whole[2:]]


async def test_a_stream_cut_before_completed_resumes_after_the_last_event_seen(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    recorder = Recorder(app_transport, cut=2)
    async with AsyncClient("http://testserver", transport=recorder, retries=2) as client:
        task_id = await finished_task(client, store)
        events = [event async for event in client.events(task_id)]
    assert [e.type for e in events] == ["started", "progress", "progress", "log", "completed"]
    assert len({e.id for e in events}) == len(events)  # nothing repeated
    first, second = recorder.streams
    assert "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == events[1].id


async def test_the_events_of_an_unknown_task_raise_task_not_found_at_once(
    app_transport: httpx.ASGITransport,
) -> None:
    recorder = Recorder(app_transport)
    async with AsyncClient("http://testserver", transport=recorder, retries=3) as client:
        with pytest.raises(TaskNotFound):
            async for _ in client.events("00000000-0000-0000-0000-000000000000"):
                pass
    assert len(recorder.streams) == 1


async def test_a_503_on_connect_is_retried_then_the_stream_is_read(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    busy = httpx.Response(503, json={"type": "service_unavailable", "message": "restarting"})
    recorder = Recorder(app_transport, fail=[busy])
    async with AsyncClient("http://testserver", transport=recorder, retries=2) as client:
        task_id = await finished_task(client, store)
        events = [event async for event in client.events(task_id)]
    assert events[-1].type == "completed"
    assert len(recorder.streams) == 2


async def test_reconnecting_is_bounded_by_the_retries(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    drops: list[httpx.Response | Exception] = [httpx.ReadError("reset") for _ in range(5)]
    recorder = Recorder(app_transport, fail=drops)
    async with AsyncClient("http://testserver", transport=recorder, retries=2) as client:
        task_id = await finished_task(client, store)
        with pytest.raises(ServiceUnavailable, match="was cut"):
            async for _ in client.events(task_id):
                pass
    assert len(recorder.streams) == 3  # the first try and two retries


async def test_wait_with_on_event_sees_every_event_and_returns_the_final_task(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    seen: list[str] = []
    async with AsyncClient("http://testserver", transport=app_transport) as client:
        task_id = await finished_task(client, store)
        task = await client.wait(task_id, timeout=10, on_event=lambda e: seen.append(e.type))
    assert seen == ["started", "progress", "progress", "log", "completed"]
    assert isinstance(task, Task) and task.status is TaskStatus.SUCCESS
    assert task.result == RESULT


async def test_wait_awaits_an_on_event_coroutine(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    seen: list[str] = []

    async def note(event: TaskEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.type)

    async with AsyncClient("http://testserver", transport=app_transport) as client:
        task_id = await finished_task(client, store)
        await client.wait(task_id, timeout=10, on_event=note)
    assert seen[-1] == "completed" and len(seen) == 5


async def test_wait_on_events_past_its_timeout_raises_task_timeout(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    async with AsyncClient("http://testserver", transport=app_transport) as client:
        task_id = await finished_task(client, store)
        with pytest.raises(TaskTimeout, match="not final after 0 s"):
            await client.wait(task_id, timeout=0, on_event=lambda e: None)


def test_a_task_not_returned_by_a_client_cannot_wait_on_itself() -> None:
    task = Task(id="t1", kind="k.x", status=TaskStatus.QUEUED, submitted_at=utcnow())
    with pytest.raises(AsyncmlError, match=r"client\.wait"):
        task.wait()


def test_map_board_counts_tasks_queued_running_and_done() -> None:
    bar = Progress(console=Console(file=io.StringIO()))
    bar.add_task("k.x", total=3)
    board = _MapBoard(bar, "k.x")
    tasks = [
        Task(id=f"t{i}", kind="k.x", status=TaskStatus.QUEUED, submitted_at=utcnow())
        for i in range(3)
    ]
    board.submitted(tasks)
    assert board.counts == (3, 0, 0)
    board.on_event(TaskEvent(task_id="t0", type="started", at=utcnow()))
    board.on_event(TaskEvent(task_id="t0", type="started", at=utcnow()))  # a redelivery
    board.on_event(TaskEvent(task_id="t1", type="progress", at=utcnow()))
    assert board.counts == (2, 1, 0)
    board.finished(tasks[0].model_copy(update={"status": TaskStatus.SUCCESS}))
    board.finished(tasks[2].model_copy(update={"status": TaskStatus.CANCELLED}))
    assert board.counts == (1, 0, 2)
    assert bar.tasks[0].completed == 2
    assert bar.tasks[0].description == "k.x: 1 queued, 0 running,"


async def test_map_with_its_bar_follows_each_task_to_its_end(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    async def finish_all_submitted() -> None:
        finished: set[str] = set()
        while len(finished) < 3:
            for task_id in set(store_ids(store)) - finished:
                store.start(task_id, utcnow())
                store.finish(task_id, TaskStatus.SUCCESS, utcnow(), result=RESULT)
                finished.add(task_id)
            await asyncio.sleep(0.02)  # a stand-in worker polling for new work

    recorder = Recorder(app_transport)
    async with AsyncClient("http://testserver", transport=recorder) as client:
        worker = asyncio.ensure_future(finish_all_submitted())
        inputs = [{"audio_url": f"http://audio.example/{i}.wav"} for i in range(3)]
        tasks = [t async for t in client.map("audio.length", inputs, progress=True)]
        await asyncio.wait_for(worker, 10)
    assert {t.status for t in tasks} == {TaskStatus.SUCCESS}
    assert len(recorder.streams) == 3  # each task followed through its event stream


def store_ids(store: SqliteTaskStore) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(store.path)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM tasks")]
    finally:
        conn.close()
