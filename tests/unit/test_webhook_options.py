"""Callback options on a server that has a webhook secret."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asyncml.api import create_app
from asyncml.settings import Settings
from asyncml.webhooks import new_secret

WAV_URL = "http://audio.example/a.wav"  # a name, judged by the worker; never fetched here


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        webhook_secret=new_secret(),
        webhook_allow_loopback=True,
        default_callback_url="http://127.0.0.1:9/default-hook",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_callback_is_recorded_on_the_task(hooked: TestClient) -> None:
    task_id = hooked.post(
        "/v1/tasks/audio.length",
        json={
            "audio_url": WAV_URL,
            "callback_url": "http://127.0.0.1:9/hook",
            "callback_events": ["started", "completed"],
        },
    ).json()["id"]
    task = hooked.get(f"/v1/tasks/{task_id}").json()
    assert task["callback"] == {
        "url": "http://127.0.0.1:9/hook",
        "events": ["completed", "started"],
    }
    assert task["deliveries"] == {}


def test_callback_options_are_not_passed_to_the_task_input(
    hooked: TestClient, tmp_path: Path
) -> None:
    response = hooked.post(
        "/v1/tasks/audio.length",
        json={"audio_url": WAV_URL, "callback_url": "http://127.0.0.1:9/hook"},
    )
    assert response.status_code == 202
    conn = sqlite3.connect(tmp_path / "broker.sqlite3")
    (payload,) = conn.execute("SELECT payload FROM kombu_message").fetchone()
    conn.close()
    message = json.loads(payload)
    (payload, _submitted_at, notices), _kwargs, _embed = json.loads(
        base64.b64decode(message["body"])
    )
    assert payload == {"audio_url": WAV_URL}
    assert notices == ["completed"]  # the worker learns from the message which notices it owes


def test_classic_callback_true_uses_the_default_url(hooked: TestClient) -> None:
    task_id = hooked.post("/audio/length", json={"audio_url": WAV_URL, "callback": True}).json()[
        "id"
    ]
    task = hooked.get(f"/v1/tasks/{task_id}").json()
    assert task["callback"]["url"] == "http://127.0.0.1:9/default-hook"


def test_webhook_secret_must_be_a_whsec_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whsec_"):
        Settings(_env_file=None, data_dir=tmp_path, webhook_secret="hunter2")


def test_loopback_callback_is_refused_at_submit_by_default(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, webhook_secret=new_secret())
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/tasks/audio.length",
            json={"audio_url": WAV_URL, "callback_url": "http://127.0.0.1:9/hook"},
        )
    assert response.status_code == 422
    assert "loopback" in response.json()["message"]


def test_default_callback_url_needs_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ASYNCML_WEBHOOK_SECRET"):
        Settings(_env_file=None, data_dir=tmp_path, default_callback_url="http://h.example/x")
