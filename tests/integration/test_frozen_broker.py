"""A frozen broker (SIGSTOP: it accepts connections and never answers) costs a client at most
the publish timeout: the whole publish, every kombu wait and retry included, is bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .fixture_server import FixtureServer
from .processes import Launcher, service_env, wait_until_ready
from .services import RabbitMQServer, RedisServer, free_ports

PUBLISH_TIMEOUT_S = 2.0
MARGIN_S = 1.0  # the store's undo and the HTTP round trip, on a loaded 2-core machine

pytestmark = pytest.mark.restart


@pytest.fixture
def api(
    tmp_path: Path, private_rabbitmq_server: RabbitMQServer, private_redis_server: RedisServer
) -> Iterator[httpx.Client]:
    (port,) = free_ports(1)
    env = service_env(
        data_dir=tmp_path / "data",
        api_port=port,
        broker_url=private_rabbitmq_server.url,
        backend_url=private_redis_server.url,
        extra={"ASYNCML_PUBLISH_TIMEOUT_S": str(PUBLISH_TIMEOUT_S)},
    )
    launch = Launcher(env, tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, launch("api", ["api"]))
        with httpx.Client(base_url=base_url, timeout=60) as client:
            yield client
    finally:
        launch.stop_all()


def test_every_submission_to_a_frozen_broker_is_refused_within_the_publish_timeout(
    api: httpx.Client, private_rabbitmq_server: RabbitMQServer, files: FixtureServer
) -> None:
    body = {"audio_url": files.url("tone-5s.wav")}
    assert api.post("/v1/tasks/audio.length", json=body).status_code == 202  # pooled, warm
    answers: list[tuple[int, float, str]] = []
    with private_rabbitmq_server.paused():
        # The first reuses the pooled connection (its confirm never comes); the next ones
        # open new connections whose AMQP handshake never completes.
        for _ in range(3):
            started = time.monotonic()
            refused = api.post("/v1/tasks/audio.length", json=body)
            answers.append((refused.status_code, time.monotonic() - started, refused.text))
    for status, elapsed, text in answers:
        assert status == 503, text
        assert elapsed <= PUBLISH_TIMEOUT_S + MARGIN_S, f"answered after {elapsed:.2f} s: {text}"
    assert api.post("/v1/tasks/audio.length", json=body).status_code == 202  # thawed
    listed = api.get("/v1/tasks", params={"limit": 200}).json()["tasks"]
    assert len(listed) == 2  # the refused submissions left no record behind
