"""Adding a kind is its module plus its one line in ``asyncml.tasks``: nothing else gets
edited, and every entry point serves it (route, schema, Celery task, CLI, DLQ replay)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import asyncml.tasks
from asyncml.api import create_app
from asyncml.cli import app as cli_app
from asyncml.engine import make_celery
from asyncml.records import ErrorBody, TaskStatus, utcnow
from asyncml.registry import build_registry
from asyncml.settings import Settings
from asyncml.store.dead_letters import DeadLetter
from asyncml.store.sqlite import SqliteTaskStore

LINE = "tests.unit.new_kind:shout"


@pytest.fixture
def with_new_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(asyncml.tasks, "_KINDS", [*asyncml.tasks._KINDS, LINE])
    yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", models_bundled=False)


def test_the_new_kind_gets_a_route_and_a_schema(with_new_kind: None, settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        spec = client.get("/openapi.json").json()
        assert "/v1/tasks/text.shout" in spec["paths"]
        assert "text.shout" in {k["name"] for k in client.get("/v1/kinds").json()}
        assert client.post("/v1/tasks/text.shout", json={}).status_code == 422


def test_the_new_kind_gets_a_celery_task_on_its_queue(
    with_new_kind: None, settings: Settings
) -> None:
    celery = make_celery(settings, build_registry(settings))
    assert celery.tasks["text.shout"].soft_time_limit == 5
    assert "text" in {q.name for q in celery.conf.task_queues}


def test_the_new_kind_gets_a_cli_command(
    with_new_kind: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCML_DATA_DIR", str(settings.data_dir))
    shown = CliRunner().invoke(cli_app, ["submit", "text.shout", "--help"])
    assert shown.exit_code == 0, shown.output
    assert "--text" in shown.output


def test_the_new_kind_is_replayed_from_the_dead_letter_queue(
    with_new_kind: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCML_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ASYNCML_MODELS_BUNDLED", "false")
    store = SqliteTaskStore(settings.store_path(), ttl_s=60)
    store.dead_letter_add(
        DeadLetter(
            task_id="t1",
            kind="text.shout",
            payload={"text": "hi"},
            attempts=3,
            error=ErrorBody(type="worker_lost", message="died", attempts=3),
            dead_at=utcnow(),
        )
    )
    done = CliRunner().invoke(cli_app, ["dlq", "retry", "t1", "--json"])
    assert done.exit_code == 0, done.output
    (replayed,) = json.loads(done.stdout)["replayed"]
    new = store.get(replayed["new_task_id"])
    assert new is not None and new.kind == "text.shout" and new.status is TaskStatus.QUEUED
