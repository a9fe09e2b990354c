from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asyncml.api import create_app
from asyncml.settings import Settings


def _closed_port() -> int:
    """A loopback port nothing listens on: bind, read the number, close."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def down_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path,
        broker_url=f"amqp://guest:s3cret-pw@127.0.0.1:{_closed_port()}//",
        publish_timeout_s=1.0,
    )


@pytest.fixture
def down_client(down_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(down_settings)) as client:
        yield client


def test_broker_down_at_submit_returns_503_json(down_client: TestClient) -> None:
    response = down_client.post("/v1/tasks/audio.length", json={"audio_url": "http://x.org/a"})
    assert response.status_code == 503
    assert response.json()["type"] == "service_unavailable"
    assert "broker" in response.json()["message"]
    assert "Retry-After" in response.headers


def test_broker_down_leaves_no_task_record(
    down_client: TestClient, down_settings: Settings
) -> None:
    down_client.post("/v1/tasks/audio.length", json={"audio_url": "http://x.org/a"})
    conn = sqlite3.connect(down_settings.store_path())
    try:
        assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0
    finally:
        conn.close()


def test_broker_down_never_shows_the_password(down_client: TestClient) -> None:
    submit = down_client.post("/v1/tasks/audio.length", json={"audio_url": "http://x.org/a"})
    ready = down_client.get("/readyz")
    assert "s3cret-pw" not in submit.text
    assert "s3cret-pw" not in ready.text


def test_readyz_names_the_broker_when_it_is_down(down_client: TestClient) -> None:
    response = down_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["broker"] != "ok"
    assert response.json()["result_store"] == "ok"
