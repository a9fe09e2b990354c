"""Prometheus series and structured logs, from the app in-process."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from asyncml.logging import configure_logging, task_context
from asyncml.settings import Settings

WAV_URL = "http://audio.example/a.wav"  # a name, judged by the worker; never fetched here


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a text exposition, or None if absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        found = series.partition("{")[2].rstrip("}")
        if ",".join(sorted(found.split(","))) == wanted:
            return float(value)
    return None


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/v1/tasks/one-id")
    client.get("/v1/tasks/another-id")
    text = client.get("/metrics").text
    count = sample(
        text, "asyncml_http_requests_total", method="GET", route="/v1/tasks/{task_id}", status="404"
    )
    assert count is not None and count >= 2


def test_metrics_count_submitted_tasks_and_queue_depth(client: TestClient) -> None:
    before = sample(
        client.get("/metrics").text, "asyncml_tasks_submitted_total", kind="audio.length"
    )
    client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL})
    text = client.get("/metrics").text
    after = sample(text, "asyncml_tasks_submitted_total", kind="audio.length")
    assert after == (before or 0) + 1
    assert sample(text, "asyncml_queue_depth", queue="audio") == 1


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_carry_task_id_and_kind(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings.model_copy(update={"log_format": "json"}), "worker")
    with task_context("t-123", "audio.length"):
        logging.getLogger("some.library").warning("fetched %d bytes", 42)
    logging.getLogger("some.library").warning("outside any task")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "fetched 42 bytes"
    assert (lines[0]["task_id"], lines[0]["kind"], lines[0]["role"]) == (
        "t-123",
        "audio.length",
        "worker",
    )
    assert "task_id" not in lines[1]


def test_text_logs_name_the_task(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(settings, "worker")
    with task_context("t-9", "euro.results"):
        logging.getLogger("x").warning("hello")
    assert "hello [task euro.results t-9]" in capsys.readouterr().err
