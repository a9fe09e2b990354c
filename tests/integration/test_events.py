"""A task's live events (GET /v1/tasks/{id}/events) on both engines: real API and worker
processes, on RabbitMQ + Redis and on the embedded default."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from .conftest import VhostPool
from .processes import Launcher, service_env, wait_until_ready
from .services import RedisServer, free_ports

Event = tuple[str, str, dict[str, Any]]  # (type, SSE id, data)


@pytest.fixture(scope="module", params=["rabbitmq_redis", "embedded"])
def api(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    rabbitmq_vhosts: VhostPool,
) -> Iterator[httpx.Client]:
    """An API and one worker with one slot serving the debug queue (queue order is run
    order, so a watched task's position falls step by step), shared by this module's tests:
    each waits for its own tasks."""
    workdir = tmp_path_factory.mktemp(f"events-{request.param}")
    (port,) = free_ports(1)
    with contextlib.ExitStack() as servers:
        urls: dict[str, str] = {}
        if request.param == "rabbitmq_redis":
            redis = servers.enter_context(RedisServer(workdir / "redis"))
            urls = {"broker_url": rabbitmq_vhosts.url(), "backend_url": redis.url}
        env = service_env(
            data_dir=workdir / "data",
            api_port=port,
            extra={"ASYNCML_DEBUG_KINDS": "true"},
            broker_url=urls.get("broker_url"),
            backend_url=urls.get("backend_url"),
        )
        launch = Launcher(env, workdir)
        servers.callback(launch.stop_all)
        base_url = f"http://127.0.0.1:{port}"
        if request.param == "embedded":
            wait_until_ready(base_url, launch("up", ["up", "--concurrency", "1"]))
        else:
            api_role = launch("api", ["api"])  # side by side with the worker, then awaited
            worker = launch("worker", ["worker", "--queues", "debug", "--concurrency", "1"])
            wait_until_ready(base_url, api_role)
            worker.wait_for_line(" ready.")
        with httpx.Client(base_url=base_url, timeout=60) as client:
            yield client


def submit(api: httpx.Client, steps: int, step_s: float) -> str:
    answer = api.post("/v1/tasks/debug.steps", json={"steps": steps, "step_s": step_s})
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["id"]
    return task_id


def read_events(
    api: httpx.Client, task_id: str, *, last_event_id: str | None = None, limit: int = 10_000
) -> list[Event]:
    """Every event of the stream until the server closes it (after ``completed``)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    seen: list[Event] = []
    with connect_sse(api, "GET", f"/v1/tasks/{task_id}/events", headers=headers) as source:
        assert source.response.status_code == 200
        for sse in source.iter_sse():
            seen.append((sse.event, sse.id, json.loads(sse.data)))
            if len(seen) >= limit:
                break
    return seen


def test_a_watched_task_streams_its_place_steps_logs_and_end(api: httpx.Client) -> None:
    running = submit(api, 4, 0.4)
    ahead = submit(api, 3, 0.4)  # position 0 lasts longer than a standing read (0.5 s)
    watched = submit(api, 3, 0.05)
    events = read_events(api, watched)
    types = [kind for kind, _, _ in events]
    assert types[-1] == "completed"
    positions = [data["position"] for kind, _, data in events if kind == "queued"]
    assert positions[0] >= 1 and positions[-1] == 0, positions
    assert positions == sorted(positions, reverse=True)  # only ever falls
    assert types.index("started") > types.index("queued")
    steps = [data["done"] for kind, _, data in events if kind == "progress"]
    assert steps == sorted(steps) and steps[-1] == 3
    logs = [data["message"] for kind, _, data in events if kind == "log"]
    assert "finished step 3 of 3" in logs  # a standard logging line of the task
    assert [data["partial"] for kind, _, data in events if kind == "output"] == [
        {"step": 1},
        {"step": 2},
        {"step": 3},
    ]
    final = events[-1][2]["task"]
    assert final["id"] == watched and final["status"] == "SUCCESS"
    assert final["result"] == {"steps": 3}
    for _, _, data in events:
        assert data["task_id"] == watched and data["at"]
    for task_id in (running, ahead):
        assert api.get(f"/v1/tasks/{task_id}", params={"wait": 20}).json()["status"] == "SUCCESS"


def test_resuming_after_an_event_loses_and_repeats_nothing(api: httpx.Client) -> None:
    task_id = submit(api, 5, 0.0)
    assert api.get(f"/v1/tasks/{task_id}", params={"wait": 30}).json()["status"] == "SUCCESS"
    whole = read_events(api, task_id)  # a finished task: its history, then completed
    stored = [(kind, sse_id) for kind, sse_id, _ in whole if kind != "queued"]
    ids = [sse_id for _, sse_id in stored]
    assert len(set(ids)) == len(ids)
    cut = len(stored) // 2
    rest = read_events(api, task_id, last_event_id=ids[cut - 1])
    assert [(kind, sse_id) for kind, sse_id, _ in rest] == stored[cut:]


def test_a_cancelled_task_stream_ends_with_completed_cancelled(api: httpx.Client) -> None:
    submit(api, 2, 0.5)  # holds the only slot
    queued = submit(api, 1, 0.0)
    with connect_sse(api, "GET", f"/v1/tasks/{queued}/events") as source:
        events = source.iter_sse()
        assert next(events).event == "queued"
        assert api.delete(f"/v1/tasks/{queued}").status_code == 200
        rest = list(events)
    assert rest[-1].event == "completed"
    assert json.loads(rest[-1].data)["task"]["status"] == "CANCELLED"


def test_a_client_that_goes_away_leaves_no_stream_open(api: httpx.Client) -> None:
    submit(api, 2, 1.0)
    queued = submit(api, 1, 0.0)
    with connect_sse(api, "GET", f"/v1/tasks/{queued}/events") as source:
        events = source.iter_sse()  # held: a dropped iterator closes the response
        assert next(events).event == "queued"
        assert _open_streams(api) == 1
    deadline = time.monotonic() + 10
    while _open_streams(api) != 0 or _gauge(api, "asyncml_tasks_watched") != 0:
        assert time.monotonic() < deadline, "the stream was still open 10 s after its client left"
        time.sleep(0.05)  # polling the server's gauge, bounded by the deadline


def test_the_events_of_an_unknown_task_are_a_404(api: httpx.Client) -> None:
    answer = api.get("/v1/tasks/00000000-0000-0000-0000-000000000000/events")
    assert answer.status_code == 404
    assert answer.json()["type"] == "task_not_found"


def test_a_queued_task_record_says_its_position(api: httpx.Client) -> None:
    submit(api, 2, 0.5)
    first = submit(api, 1, 0.0)
    second = submit(api, 1, 0.0)
    record = api.get(f"/v1/tasks/{second}").json()
    assert record["status"] == "QUEUED"
    before = api.get(f"/v1/tasks/{first}").json()
    assert record["position"] == before["position"] + 1
    done = api.get(f"/v1/tasks/{second}", params={"wait": 30}).json()
    assert "position" not in done and "eta_s" not in done


def _open_streams(api: httpx.Client) -> float:
    return _gauge(api, "asyncml_event_streams_open")


def _gauge(api: httpx.Client, name: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")
