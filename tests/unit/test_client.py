"""The SDK against the real app in-process (httpx.ASGITransport), no worker: tasks are
finished by writing the store as a worker would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from asyncml.api import create_app
from asyncml.client import AsyncClient, Task
from asyncml.errors import (
    InputInvalid,
    RateLimited,
    ServiceUnavailable,
    TaskConflict,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    UnknownKind,
)
from asyncml.settings import Settings
from asyncml.store import ErrorBody, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore
from asyncml.tasks.audio import AudioLengthOut

WAV_URL = "http://audio.example/a.wav"  # a name, judged by the worker; never fetched here
AUDIO_RESULT = {
    "audio_length": 30.0,
    "sample_rate": 16000,
    "channels": 1,
    "frames": 480000,
    "format": "WAV",
}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Flaky(httpx.AsyncBaseTransport):
    """Answers the first ``failures`` requests itself, then hands over to the real app."""

    def __init__(self, inner: httpx.AsyncBaseTransport, responses: list[httpx.Response]):
        self.inner = inner
        self.responses = responses
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.responses:
            return self.responses.pop(0)
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def app_transport(settings: Settings) -> AsyncIterator[httpx.ASGITransport]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)


@pytest.fixture
def make_client(
    app_transport: httpx.ASGITransport,
) -> Callable[..., AsyncClient]:
    def make(responses: list[httpx.Response] | None = None, retries: int = 3) -> AsyncClient:
        transport = Flaky(app_transport, responses or [])
        client = AsyncClient("http://testserver", transport=transport, retries=retries)
        client.transport = transport  # type: ignore[attr-defined]  # for the tests' counts
        return client

    return make


async def test_submit_returns_a_queued_task(make_client: Callable[..., AsyncClient]) -> None:
    async with make_client() as client:
        task = await client.submit("audio.length", audio_url=WAV_URL)
    assert task.status is TaskStatus.QUEUED
    assert task.kind == "audio.length"


async def test_wait_returns_once_a_worker_finishes(
    make_client: Callable[..., AsyncClient], store: SqliteTaskStore
) -> None:
    async with make_client() as client:
        task = await client.submit("audio.length", audio_url=WAV_URL)
        waiting = asyncio.ensure_future(client.wait(task.id, timeout=20))
        await asyncio.to_thread(store.start, task.id, utcnow())
        await asyncio.to_thread(
            store.finish, task.id, TaskStatus.SUCCESS, utcnow(), result=AUDIO_RESULT
        )
        done = await asyncio.wait_for(waiting, 10)
    assert done.status is TaskStatus.SUCCESS
    output = done.output()
    assert isinstance(output, AudioLengthOut)
    assert output.audio_length == 30.0


async def test_failed_task_output_raises_task_failed_with_its_error(
    make_client: Callable[..., AsyncClient], store: SqliteTaskStore
) -> None:
    async with make_client() as client:
        task = await client.submit("audio.length", audio_url=WAV_URL)
        error = ErrorBody(type="audio_not_audio", message="not a recognised audio format")
        await asyncio.to_thread(store.finish, task.id, TaskStatus.FAILURE, utcnow(), error=error)
        done = await client.wait(task.id, timeout=10)
    with pytest.raises(TaskFailed, match="not a recognised audio format") as failed:
        done.output()
    assert failed.value.error_type == "audio_not_audio"


async def test_cancel_then_cancel_again_is_a_conflict(
    make_client: Callable[..., AsyncClient],
) -> None:
    async with make_client() as client:
        task = await client.submit("audio.length", audio_url=WAV_URL)
        assert (await client.cancel(task.id)).status is TaskStatus.CANCELLED
        with pytest.raises(TaskConflict):
            await client.cancel(task.id)


async def test_unknown_id_raises_task_not_found(make_client: Callable[..., AsyncClient]) -> None:
    async with make_client() as client:
        with pytest.raises(TaskNotFound, match="no task with id"):
            await client.get("nope")


async def test_invalid_input_raises_input_invalid_without_retry(
    make_client: Callable[..., AsyncClient],
) -> None:
    async with make_client() as client:
        with pytest.raises(InputInvalid, match="audio_url"):
            await client.submit("audio.length", audio_url="not a url")
        assert client.transport.requests == 1  # type: ignore[attr-defined]


async def test_unknown_kind_raises_unknown_kind(make_client: Callable[..., AsyncClient]) -> None:
    async with make_client() as client:
        with pytest.raises(UnknownKind):
            await client.submit("no.such", x=1)


async def test_503_is_retried_until_the_service_answers(
    make_client: Callable[..., AsyncClient],
) -> None:
    unavailable = [
        httpx.Response(503, json={"type": "service_unavailable", "message": "broker down"})
        for _ in range(2)
    ]
    async with make_client(unavailable) as client:
        task = await client.submit("audio.length", audio_url=WAV_URL)
        assert client.transport.requests == 3  # type: ignore[attr-defined]
    assert task.status is TaskStatus.QUEUED


async def test_429_waits_for_retry_after_then_succeeds(
    make_client: Callable[..., AsyncClient],
) -> None:
    limited = [httpx.Response(429, headers={"Retry-After": "0"}, json={"type": "rate_limited"})]
    async with make_client(limited) as client:
        task = await client.submit("audio.length", audio_url=WAV_URL)
        assert client.transport.requests == 2  # type: ignore[attr-defined]
    assert task.status is TaskStatus.QUEUED


async def test_retries_are_bounded(make_client: Callable[..., AsyncClient]) -> None:
    unavailable = [httpx.Response(503, json={"type": "service_unavailable", "message": "down"})]
    async with make_client(unavailable * 10, retries=2) as client:
        with pytest.raises(ServiceUnavailable, match="down"):
            await client.get("any")
        assert client.transport.requests == 3  # type: ignore[attr-defined]


async def test_rate_limited_carries_retry_after() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(429, headers={"Retry-After": "7"}, json={})
    )
    async with AsyncClient("http://x", transport=transport, retries=0) as client:
        with pytest.raises(RateLimited) as limited:
            await client.get("any")
    assert limited.value.retry_after_s == 7


async def test_map_yields_every_task_once_finished(
    make_client: Callable[..., AsyncClient], store: SqliteTaskStore
) -> None:
    async def finish_all_submitted() -> None:
        finished: set[str] = set()
        while len(finished) < 5:
            import sqlite3

            conn = sqlite3.connect(store.path)
            ids = [r[0] for r in conn.execute("SELECT id FROM tasks")]
            conn.close()
            for task_id in set(ids) - finished:
                store.finish(task_id, TaskStatus.SUCCESS, utcnow(), result=AUDIO_RESULT)
                finished.add(task_id)
            await asyncio.sleep(0.02)  # a stand-in worker polling for new work

    async with make_client() as client:
        worker = asyncio.ensure_future(finish_all_submitted())
        inputs = [{"audio_url": f"http://audio.example/{i}.wav"} for i in range(5)]
        tasks: list[Task] = [t async for t in client.map("audio.length", inputs, concurrency=2)]
        await asyncio.wait_for(worker, 10)
    assert len({t.id for t in tasks}) == 5
    assert all(t.status is TaskStatus.SUCCESS for t in tasks)


async def test_429_without_retry_after_is_not_retried(
    make_client: Callable[..., AsyncClient],
) -> None:
    limited = [httpx.Response(429, json={"type": "rate_limited", "message": "slow down"})]
    async with make_client(limited) as client:
        with pytest.raises(RateLimited, match="slow down"):
            await client.get("any")
        assert client.transport.requests == 1  # type: ignore[attr-defined]


def _fake_server(submitted: list[str]) -> httpx.MockTransport:
    """An HTTP stand-in that accepts every task and reports it finished at once."""

    def handle(request: httpx.Request) -> httpx.Response:
        now = "2026-01-01T00:00:00+00:00"
        if request.method == "POST" and request.url.path.endswith("/batch"):
            tasks = []
            for item in json.loads(request.content)["inputs"]:
                submitted.append(json.dumps(item))
                tasks.append(
                    {
                        "id": f"t{len(submitted)}",
                        "kind": "k.x",
                        "status": "QUEUED",
                        "submitted_at": now,
                    }
                )
            return httpx.Response(202, json={"tasks": tasks})
        if request.method == "POST":
            submitted.append(request.content.decode())
            task_id = f"t{len(submitted)}"
            body = {"id": task_id, "kind": "k.x", "status": "QUEUED", "submitted_at": now}
            return httpx.Response(202, json=body)
        task_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(
            200, json={"id": task_id, "kind": "k.x", "status": "SUCCESS", "submitted_at": now}
        )

    return httpx.MockTransport(handle)


def test_stopping_a_map_early_submits_nothing_more() -> None:
    from asyncml.client import Client

    submitted: list[str] = []
    with Client("http://x", transport=_fake_server(submitted)) as client:
        tasks = client.map("k.x", [{"n": i} for i in range(100)], concurrency=4, progress=False)
        first = next(tasks)
        tasks.close()
    assert first.status is TaskStatus.SUCCESS
    assert len(submitted) <= 8


class LosesFirstAnswer(httpx.AsyncBaseTransport):
    """Delivers the first request to the app, then drops its answer (connection lost)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        response = await self.inner.handle_async_request(request)
        if self.requests == 1:
            await response.aread()
            raise httpx.ReadError("connection reset", request=request)
        return response


async def test_retried_submit_whose_answer_was_lost_makes_one_task(
    app_transport: httpx.ASGITransport, store: SqliteTaskStore
) -> None:
    import sqlite3

    transport = LosesFirstAnswer(app_transport)
    async with AsyncClient("http://testserver", transport=transport, retries=2) as client:
        task = await client.submit("audio.length", audio_url=WAV_URL)
    assert transport.requests == 2
    conn = sqlite3.connect(store.path)
    ids = [row[0] for row in conn.execute("SELECT id FROM tasks")]
    conn.close()
    assert ids == [task.id]


async def test_predict_is_one_round_trip_when_the_task_is_final_in_time(
    make_client: Callable[..., AsyncClient], store: SqliteTaskStore
) -> None:
    async def finish_when_queued() -> None:  # a stand-in worker
        for _ in range(500):
            rows = store._execute("SELECT id FROM tasks WHERE status = 'QUEUED'").fetchall()
            if rows:
                store.start(rows[0][0], utcnow())
                store.finish(rows[0][0], TaskStatus.SUCCESS, utcnow(), result=AUDIO_RESULT)
                return
            await asyncio.sleep(0.01)

    async with make_client() as client:
        worker = asyncio.ensure_future(finish_when_queued())
        task = await client.predict("audio.length", wait_s=5, audio_url=WAV_URL)
        await worker
        requests = client.transport.requests  # type: ignore[attr-defined]  # set by make_client
    assert task.status is TaskStatus.SUCCESS
    assert task.output() == AudioLengthOut.model_validate(AUDIO_RESULT)
    assert requests == 1


async def test_submit_batch_returns_one_task_per_input_in_order(
    make_client: Callable[..., AsyncClient],
) -> None:
    urls = [f"http://audio.example/{i}.wav" for i in range(3)]
    async with make_client() as client:
        tasks = await client.submit_batch("audio.length", [{"audio_url": u} for u in urls])
        again = [await client.get(t.id) for t in tasks]
    assert [t.status for t in tasks] == [TaskStatus.QUEUED] * 3
    assert len({t.id for t in tasks}) == 3
    assert [t.id for t in again] == [t.id for t in tasks]


async def test_map_submits_in_batch_requests(app_transport: httpx.ASGITransport) -> None:
    posts: list[str] = []

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                posts.append(request.url.path)
            return await app_transport.handle_async_request(request)

    async with AsyncClient("http://testserver", transport=Recording()) as client:
        inputs = [{"audio_url": f"http://audio.example/{i}.wav"} for i in range(6)]
        with pytest.raises(TaskTimeout):  # no worker here: nothing finishes
            async for _ in client.map("audio.length", inputs, timeout=0.2, progress=False):
                pass
    assert posts == ["/v1/tasks/audio.length/batch"]  # one request for six inputs


async def test_batch_replay_with_the_same_idempotency_key_returns_the_same_tasks(
    app_transport: httpx.ASGITransport,
) -> None:
    body = {"inputs": [{"audio_url": "http://audio.example/a.wav"}] * 2}
    headers = {"Idempotency-Key": "batch-1"}
    async with httpx.AsyncClient(transport=app_transport, base_url="http://t") as http:
        first = await http.post("/v1/tasks/audio.length/batch", json=body, headers=headers)
        again = await http.post("/v1/tasks/audio.length/batch", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert [t["id"] for t in first.json()["tasks"]] == [t["id"] for t in again.json()["tasks"]]
