"""The Python SDK against the real stack: uvicorn, RabbitMQ, Redis and a Celery worker."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from asyncml.client import AsyncClient, Client
from asyncml.errors import InputInvalid, TaskFailed, TaskNotFound
from asyncml.store import TaskStatus
from asyncml.tasks.audio import AudioLengthOut

from .fixture_server import FixtureServer


@pytest.fixture
def base_url(api: httpx.Client) -> str:
    return str(api.base_url).rstrip("/")


def test_run_returns_the_typed_output(base_url: str, files: FixtureServer) -> None:
    with Client(base_url) as client:
        output = client.run("audio.length", audio_url=files.url("tone-30s.wav"), timeout=60)
    assert isinstance(output, AudioLengthOut)
    assert abs(output.audio_length - 30.0) <= 0.01


def test_run_of_a_failing_task_raises_task_failed(base_url: str, files: FixtureServer) -> None:
    with Client(base_url) as client, pytest.raises(TaskFailed) as failed:
        client.run("audio.length", audio_url=files.url("notes.wav"), timeout=60)
    assert failed.value.error_type == "audio_not_audio"


def test_errors_carry_the_server_message(base_url: str) -> None:
    with Client(base_url) as client:
        with pytest.raises(InputInvalid, match="audio_url"):
            client.submit("audio.length", audio_url="nope")
        with pytest.raises(TaskNotFound):
            client.get("00000000-0000-0000-0000-000000000000")


def test_cancel_stops_a_queued_task(base_url: str, files: FixtureServer) -> None:
    with Client(base_url) as client:
        blocker = client.submit("audio.length", audio_url=files.url("gate/tone-5s.wav"))
        assert files.gate_reached.wait(30)
        victim = client.submit("audio.length", audio_url=files.url("victim.wav"))
        assert client.cancel(victim.id).status is TaskStatus.CANCELLED
        files.gate_open.set()
        assert client.wait(blocker.id, timeout=60).status is TaskStatus.SUCCESS
    assert files.hits("victim.wav") == 0


def test_map_of_200_jobs_yields_each_result_once(base_url: str, files: FixtureServer) -> None:
    inputs = [{"audio_url": files.url("tone-5s.wav")} for _ in range(200)]
    with Client(base_url) as client:
        tasks = list(client.map("audio.length", inputs, concurrency=32, progress=False))
    assert len(tasks) == 200
    assert len({t.id for t in tasks}) == 200
    assert {t.status for t in tasks} == {TaskStatus.SUCCESS}
    assert {round(t.result["audio_length"], 2) for t in tasks} == {5.0}


def test_async_map_yields_results_as_they_finish(base_url: str, files: FixtureServer) -> None:
    async def scenario() -> list[str]:
        async with AsyncClient(base_url) as client:
            inputs = [{"audio_url": files.url(n)} for n in ("tone-30s.wav", "notes.wav") * 5]
            return [t.status.value async for t in client.map("audio.length", inputs)]

    statuses = asyncio.run(scenario())
    assert sorted(statuses) == ["FAILURE"] * 5 + ["SUCCESS"] * 5
