"""Outages of the broker and the result store: clear 503s, and no accepted task lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixture_server import FixtureServer
from http_api import submit_audio, wait_final
from processes import Launcher, service_env, wait_until_ready
from services import RabbitMQServer, RedisServer, free_ports

pytestmark = pytest.mark.restart


@pytest.fixture
def roles(
    tmp_path: Path, private_rabbitmq_server: RabbitMQServer, private_redis_server: RedisServer
) -> Iterator[tuple[Launcher, str]]:
    """Start asyncml roles against this test's own RabbitMQ and Redis."""
    (port,) = free_ports(1)
    env = service_env(
        data_dir=tmp_path / "data",
        api_port=port,
        broker_url=private_rabbitmq_server.url,
        backend_url=private_redis_server.url,
        extra={"ASYNCML_PUBLISH_TIMEOUT_S": "2"},
    )
    launch = Launcher(env, tmp_path)
    yield launch, f"http://127.0.0.1:{port}"
    launch.stop_all()


def submit(api: httpx.Client, url: str) -> httpx.Response:
    return api.post("/v1/tasks/audio.length", json={"audio_url": url})


def test_stalled_broker_gives_503_within_the_publish_timeout(
    roles: tuple[Launcher, str], private_rabbitmq_server: RabbitMQServer, files: FixtureServer
) -> None:
    launch, base_url = roles
    wait_until_ready(base_url, launch("api", ["api"]))
    with httpx.Client(base_url=base_url, timeout=60) as api:
        assert submit(api, files.url("tone-5s.wav")).status_code == 202
        with private_rabbitmq_server.paused():
            started = time.monotonic()
            refused = submit(api, files.url("tone-5s.wav"))
            elapsed = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.json()["type"] == "service_unavailable"
        assert elapsed < 15, f"a stalled broker held the request for {elapsed:.1f} s"
        assert submit(api, files.url("tone-5s.wav")).status_code == 202


@pytest.mark.parametrize("server", ["private_rabbitmq_server", "private_redis_server"])
def test_queued_tasks_survive_a_restart_of(
    server: str, roles: tuple[Launcher, str], files: FixtureServer, request: pytest.FixtureRequest
) -> None:
    launch, base_url = roles
    wait_until_ready(base_url, launch("api", ["api"]))
    with httpx.Client(base_url=base_url, timeout=60) as api:
        ids = [submit_audio(api, files.url("tone-5s.wav")) for _ in range(3)]
    restarted: RabbitMQServer | RedisServer = request.getfixturevalue(server)
    restarted.restart()
    worker = launch("worker", ["worker", "--concurrency", "1"])
    worker.wait_for_line(" ready.")
    with httpx.Client(base_url=base_url, timeout=60) as api:
        assert [wait_final(api, i)["status"] for i in ids] == ["SUCCESS"] * 3


def test_result_store_down_gives_503_naming_it(
    roles: tuple[Launcher, str], private_redis_server: RedisServer, files: FixtureServer
) -> None:
    launch, base_url = roles
    wait_until_ready(base_url, launch("api", ["api"]))
    private_redis_server.stop()
    try:
        with httpx.Client(base_url=base_url, timeout=60) as api:
            refused = submit(api, files.url("tone-5s.wav"))
            ready = api.get("/readyz")
        assert refused.status_code == 503
        assert "result store" in refused.json()["message"]
        assert ready.status_code == 503
        assert ready.json()["broker"] == "ok"
        assert ready.json()["result_store"] != "ok"
    finally:
        private_redis_server.start()
