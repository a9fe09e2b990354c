"""The SDK's and the CLI's live views of a task against a real ``asyncml up`` (embedded
engine, one worker slot, so a task submitted behind another waits in the queue)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncml.client import AsyncClient, Client
from asyncml.records import TaskEvent

from .processes import Launcher, service_env, wait_until_ready
from .services import free_ports


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("sdk-events")
    (port,) = free_ports(1)
    env = service_env(
        data_dir=workdir / "data", api_port=port, extra={"ASYNCML_DEBUG_KINDS": "true"}
    )
    launch = Launcher(env, workdir)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, launch("up", ["up", "--concurrency", "1"]))
        yield url
    finally:
        launch.stop_all()


def asyncml(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (stdout a pipe: no live redrawing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCML_")}
    env["ASYNCML_DEBUG_KINDS"] = "true"  # the CLI's submit commands come from its registry
    return subprocess.run(
        [sys.executable, "-m", "asyncml", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=Path(__file__).parent,
    )


def test_client_events_follow_a_queued_task_to_its_end(base_url: str) -> None:
    with Client(base_url) as client:
        client.submit("debug.steps", steps=2, step_s=0.5)  # holds the only slot
        task = client.submit("debug.steps", steps=3, step_s=0.05)
        events = list(client.events(task.id, timeout=60))
    types = [e.type for e in events]
    assert types[0] == "queued" and types[-1] == "completed"
    assert types.index("started") > types.index("queued")
    assert [e.data["done"] for e in events if e.type == "progress"][-1] == 3
    assert "finished step 3 of 3" in [e.data["message"] for e in events if e.type == "log"]
    assert events[-1].data["task"]["result"] == {"steps": 3}


def test_async_client_events_follow_a_task_to_its_end(base_url: str) -> None:
    async def follow() -> list[TaskEvent]:
        async with AsyncClient(base_url) as client:
            task = await client.submit("debug.steps", steps=3, step_s=0.05)
            return [event async for event in client.events(task.id, timeout=60)]

    events = asyncio.run(follow())
    assert [e.data["partial"] for e in events if e.type == "output"] == [
        {"step": 1},
        {"step": 2},
        {"step": 3},
    ]
    assert events[-1].type == "completed"


def test_task_wait_with_on_event_returns_the_final_task(base_url: str) -> None:
    seen: list[TaskEvent] = []
    with Client(base_url) as client:
        task = client.submit("debug.steps", steps=4, step_s=0.05)
        done = task.wait(timeout=60, on_event=seen.append)
    assert done.status.value == "SUCCESS" and done.result == {"steps": 4}
    steps = [e.data["done"] for e in seen if e.type == "progress"]
    assert steps == sorted(steps) and steps[-1] == 4
    assert seen[-1].type == "completed"


def test_a_sync_map_with_its_bar_yields_every_task(base_url: str) -> None:
    with Client(base_url) as client:
        inputs = [{"steps": 1, "step_s": 0.0} for _ in range(3)]
        tasks = list(client.map("debug.steps", inputs, timeout=60, progress=True))
    assert [t.status.value for t in tasks] == ["SUCCESS"] * 3


def test_watch_shows_the_queue_the_steps_the_logs_and_the_result(base_url: str) -> None:
    with Client(base_url) as client:
        client.submit("debug.steps", steps=6, step_s=1.0)  # outlasts the CLI's start-up
        task = client.submit("debug.steps", steps=3, step_s=0.1)
    shown = asyncml("watch", task.id, "--url", base_url)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "queued: position 0" in out
    assert "started on" in out
    assert "progress 3/3 step 3" in out
    assert "finished step 3 of 3" in out
    assert out.index("queued: position") < out.index("started on") < out.index("SUCCESS")


def test_watch_json_prints_one_event_per_line(base_url: str) -> None:
    with Client(base_url) as client:
        task = client.submit("debug.steps", steps=2, step_s=0.0)
    shown = asyncml("watch", task.id, "--url", base_url, "--json")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert lines[-1]["type"] == "completed"
    assert lines[-1]["task"]["status"] == "SUCCESS"
    assert all(line["task_id"] == task.id for line in lines)


def test_watch_of_an_unknown_task_exits_2(base_url: str) -> None:
    shown = asyncml("watch", "00000000-0000-0000-0000-000000000000", "--url", base_url)
    assert shown.returncode == 2
    assert "task_not_found" in shown.stderr


def test_submit_wait_shows_the_live_view_and_json_stays_one_record(base_url: str) -> None:
    shown = asyncml("submit", "debug.steps", "--steps", "2", "--wait", "--url", base_url)
    assert shown.returncode == 0, shown.stderr
    assert "progress 2/2 step 2" in shown.stdout and "SUCCESS" in shown.stdout
    quiet = asyncml("submit", "debug.steps", "--steps", "2", "--wait", "--json", "--url", base_url)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["result"] == {"steps": 2}  # the record alone
