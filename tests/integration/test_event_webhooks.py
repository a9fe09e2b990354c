"""Event webhooks on RabbitMQ + Redis: a task's progress notices are signed and throttled,
the latest step is never lost, and ``completed`` always arrives. Real API, a worker running
the task, a worker delivering the notices (one slot each, so deliveries keep queue order)
and a receiver on loopback."""

from __future__ import annotations

import contextlib
import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from asyncml.webhooks import verify_signature

from .conftest import WEBHOOK_SECRET, VhostPool
from .processes import Launcher, service_env, wait_until_ready
from .receiver import Receiver
from .services import RedisServer, free_ports

THROTTLE_S = 0.5  # engine/progress.py: at most one intermediate notice per 500 ms per task
SLACK_S = 0.1  # a notice leaves at a flush (every 50 ms), carrying the latest step's time


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_vhosts: VhostPool
) -> Iterator[httpx.Client]:
    workdir = tmp_path_factory.mktemp("event-webhooks")
    (port,) = free_ports(1)
    with contextlib.ExitStack() as servers:
        redis = servers.enter_context(RedisServer(workdir / "redis"))
        env = service_env(
            data_dir=workdir / "data",
            api_port=port,
            broker_url=rabbitmq_vhosts.url(),
            backend_url=redis.url,
            extra={
                "ASYNCML_DEBUG_KINDS": "true",
                "ASYNCML_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "ASYNCML_WEBHOOK_ALLOW_LOOPBACK": "true",
            },
        )
        launch = Launcher(env, workdir)
        servers.callback(launch.stop_all)
        base_url = f"http://127.0.0.1:{port}"
        api_role = launch("api", ["api"])  # side by side with the workers, then awaited
        workers = [
            launch(f"worker-{queue}", ["worker", "--queues", queue, "--concurrency", "1"])
            for queue in ("debug", "webhooks")
        ]
        wait_until_ready(base_url, api_role)
        for worker in workers:
            worker.wait_for_line(" ready.")
        with httpx.Client(base_url=base_url, timeout=60) as client:
            yield client


def submit_steps(api: httpx.Client, url: str, steps: int, step_s: float) -> str:
    body = {
        "steps": steps,
        "step_s": step_s,
        "callback_url": url,
        "callback_events": ["progress", "completed"],
    }
    answer = api.post("/v1/tasks/debug.steps", json=body)
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["id"]
    return task_id


def notices_until_completed(receiver: Receiver, hook: str) -> list[dict[str, Any]]:
    """Every notice, verified, in arrival order, up to and with ``completed``."""
    count = 1
    while True:
        posts = receiver.wait_for(hook, count, timeout=60)
        payloads = [verify_signature(p.body, p.headers, WEBHOOK_SECRET) for p in posts]
        if any(p["event"] == "completed" for p in payloads):
            return payloads
        count = len(posts) + 1


def test_progress_notices_are_signed_throttled_and_end_with_the_last_step(
    api: httpx.Client, receiver: Receiver
) -> None:
    hook = f"hook-{uuid.uuid4().hex[:8]}"
    task_id = submit_steps(api, receiver.url(hook), steps=40, step_s=0.05)  # ~2 s
    notices = notices_until_completed(receiver, hook)
    assert [n["event"] for n in notices][-1] == "completed"
    progress = [n for n in notices if n["event"] == "progress"]
    assert 2 <= len(progress) < 40, [n["done"] for n in progress]
    assert all(n["task_id"] == task_id and n["type"] == "progress" for n in progress)
    steps = [n["done"] for n in progress]
    assert steps == sorted(steps)  # a step held back at the end is dropped: completed says it
    times = [datetime.fromisoformat(n["at"]) for n in progress]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= THROTTLE_S - SLACK_S, gaps
    completed = notices[-1]
    assert (completed["id"], completed["status"]) == (task_id, "SUCCESS")
    assert completed["result"] == {"steps": 40}


def test_a_fast_task_sends_fewer_notices_than_steps_and_always_completed(
    api: httpx.Client, receiver: Receiver
) -> None:
    hook = f"hook-{uuid.uuid4().hex[:8]}"
    task_id = submit_steps(api, receiver.url(hook), steps=200, step_s=0.0)
    notices = notices_until_completed(receiver, hook)
    events = [n["event"] for n in notices]
    assert events.count("completed") == 1
    progress = [n for n in notices if n["event"] == "progress"]
    assert 1 <= len(progress) <= 2, [n["done"] for n in progress]  # one per 500 ms
    assert notices[-1]["id"] == task_id and notices[-1]["status"] == "SUCCESS"


def test_a_progress_notice_names_its_task_like_every_notice(
    api: httpx.Client, receiver: Receiver
) -> None:
    hook = f"hook-{uuid.uuid4().hex[:8]}"
    task_id = submit_steps(api, receiver.url(hook), steps=1, step_s=0.0)
    notices = notices_until_completed(receiver, hook)
    (progress,) = [n for n in notices if n["event"] == "progress"]
    assert progress["id"] == task_id and progress["event_id"], json.dumps(progress)
