"""What the CLI tells a new user (issue 20, point 4): types of every input, keys that are not
enforced, an empty dead-letter queue, flags without a value, and a conflict's own exit code."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from asyncml.api import create_app
from asyncml.cli import app
from asyncml.settings import Settings
from asyncml.store.sqlite import SqliteTaskStore

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    return {"ASYNCML_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    """The real app on a loopback port: the socket listens before the server thread starts,
    so the first request waits in the backlog rather than racing the start-up."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def test_kinds_shows_the_type_of_every_model_feature(api_url: str) -> None:
    done = runner.invoke(app, ["kinds", "--url", api_url], env={"COLUMNS": "400"})
    assert done.exit_code == 0, done.output
    assert "sepal_length?: number" in done.output
    assert "audio_url: string (uri)" in done.output


def test_cancelling_a_finished_task_exits_4_not_1(
    api_url: str, store: SqliteTaskStore, env: dict[str, str]
) -> None:
    submitted = runner.invoke(
        app, ["submit", "audio.length", "--audio-url", "https://example.com/a.wav", "--json",
              "--url", api_url],
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    task_id = json.loads(submitted.stdout)["id"]
    assert runner.invoke(app, ["cancel", task_id, "--url", api_url]).exit_code == 0
    again = runner.invoke(app, ["cancel", task_id, "--url", api_url])
    assert again.exit_code == 4, again.output
    assert "task_conflict" in again.output


def test_help_documents_exit_code_4() -> None:
    assert "4 the task's state refuses it" in runner.invoke(app, ["--help"]).output


def test_keys_create_on_the_loopback_default_says_keys_are_not_enforced(
    env: dict[str, str],
) -> None:
    done = runner.invoke(app, ["keys", "create", "alice"], env=env)
    assert done.exit_code == 0, done.output
    assert "keys are not enforced" in done.stderr
    assert "ASYNCML_AUTH=on" in done.stderr


def test_keys_create_says_nothing_when_keys_are_enforced(env: dict[str, str]) -> None:
    done = runner.invoke(app, ["keys", "create", "alice"], env={**env, "ASYNCML_AUTH": "on"})
    assert done.exit_code == 0, done.output
    assert "not enforced" not in done.stderr


def test_purge_all_on_an_empty_queue_says_so_and_exits_0(env: dict[str, str]) -> None:
    done = runner.invoke(app, ["dlq", "purge", "--all"], env=env, input="")
    assert done.exit_code == 0, done.output
    assert "empty" in done.output
    assert "Remove all" not in done.output  # nothing to ask about


def test_help_shows_no_bool_placeholder_for_flags() -> None:
    for args in (["--help"], ["keys", "create", "--help"], ["dlq", "purge", "--help"]):
        shown = runner.invoke(app, args, env={"COLUMNS": "200"}).output
        assert "--help" in shown
        assert "<bool>" not in shown, args
