"""Flower against the real RabbitMQ stack lists the service's workers and tasks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fixture_server import FixtureServer
from .http_api import submit_audio, wait_final
from .processes import ServiceProcess
from .services import free_ports

AUTH = ("ops", "flower-test-pw")


@pytest.fixture
def flower(stack_env: tuple[dict[str, str], str, Path]) -> Iterator[str]:
    env, _, workdir = stack_env
    (port,) = free_ports(1)
    process = ServiceProcess(
        "flower",
        ["flower", "--port", str(port), "--basic-auth", ":".join(AUTH)],
        env=env,
        workdir=workdir,
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200)
        yield base
    finally:
        process.stop()


def eventually(check: Any, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds (Flower has no readiness signal of its own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # start-up probe interval, bounded by the deadline
    raise AssertionError(f"not true within {timeout} s: {check}")


def test_flower_lists_the_workers_and_their_tasks(
    flower: str, api: httpx.Client, files: FixtureServer
) -> None:
    with httpx.Client(base_url=flower, auth=AUTH, timeout=10) as ui:
        assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
        eventually(lambda: len(ui.get("/api/workers", params={"refresh": "1"}).json()) > 0)
        task_id = submit_audio(api, files.url("tone-5s.wav"))
        wait_final(api, task_id)
        # Events reach Flower a moment after the record is final: wait for the last one.
        eventually(lambda: ui.get("/api/tasks").json().get(task_id, {}).get("state") == "SUCCESS")
        task = ui.get("/api/tasks").json()[task_id]
    assert task["name"] == "audio.length"
