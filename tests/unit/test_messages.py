"""What a new user reads when something goes wrong says what and where (issue 20, point 4)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from asyncml.api import create_app
from asyncml.engine import make_celery
from asyncml.errors import FetchError, TaskFailed
from asyncml.kinds import TaskContext, task_kind
from asyncml.registry import Registry
from asyncml.settings import Settings
from asyncml.store import TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore
from asyncml.tasks._audio_errors import AudioNotAudio
from asyncml.tasks._probe import probe_audio

WAV_URL = "https://example.com/a.wav"


def test_json_syntax_error_names_line_column_and_fault(client: TestClient) -> None:
    response = client.post(
        "/v1/tasks/audio.length",
        content=b'{"audio_url": "https://x/a.wav",}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["message"] == "invalid JSON at line 1, column 33: trailing comma"


def test_json_syntax_error_on_a_later_line_counts_lines_and_columns(client: TestClient) -> None:
    response = client.post(
        "/v1/tasks/audio.length",
        content=b'{\n  "audio_url": "https://x/a.wav"\n  "extra": 1\n}',
        headers={"Content-Type": "application/json"},
    )
    assert response.json()["message"] == (
        "invalid JSON at line 3, column 3: expecting ',' delimiter"
    )


def test_405_on_a_kinds_path_names_the_kind_routes_methods(client: TestClient) -> None:
    # GET and DELETE would read "audio.length" as a task id: not the route this path is for.
    response = client.put("/v1/tasks/audio.length")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["message"].endswith("allowed: POST")


def test_loopback_callback_refusal_names_the_webhook_setting(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, data_dir=tmp_path, webhook_secret="whsec_a2tra2tra2tra2tra2tra2tra2tra2tr"
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/tasks/audio.length",
            json={"audio_url": WAV_URL, "callback_url": "http://127.0.0.1:9/hook"},
        )
    assert response.status_code == 422
    message = response.json()["message"]
    assert "ASYNCML_WEBHOOK_ALLOW_LOOPBACK=true" in message
    assert "FETCH" not in message


def test_loopback_audio_url_refusal_still_names_the_fetch_setting(client: TestClient) -> None:
    response = client.post("/v1/tasks/audio.length", json={"audio_url": "http://127.0.0.1/a.wav"})
    assert "ASYNCML_FETCH_ALLOW_LOOPBACK=true" in response.json()["message"]


def _probe_in_a_fresh_process(path: Path, content_type: str | None) -> list[str]:
    """The probe's verdict and whether it imported librosa (seconds of start-up)."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from asyncml.tasks._probe import probe_audio
        from asyncml.tasks._audio_errors import AudioNotAudio
        try:
            probe_audio(Path(sys.argv[1]), *sys.argv[2:3])
            print("audio", "librosa" in sys.modules)
        except AudioNotAudio:
            print("not_audio", "librosa" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), *([content_type] if content_type else [])],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.split()


def test_a_20_byte_text_answer_is_not_audio_without_the_decoder(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"404 page not found\r\n")
    assert _probe_in_a_fresh_process(path, None) == ["not_audio", "False"]


def test_a_binary_body_labelled_html_is_not_audio_without_the_decoder(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(bytes(range(256)) * 8)
    assert _probe_in_a_fresh_process(path, "text/html; charset=utf-8") == ["not_audio", "False"]


def test_sniffed_refusal_says_why(tmp_path: Path) -> None:
    path = tmp_path / "tiny.bin"
    path.write_bytes(b"\x00\x01\x02\x03" * 5)
    with pytest.raises(AudioNotAudio, match="20 bytes, too few to hold any audio"):
        probe_audio(path)


class _In(BaseModel):
    n: int


class _Out(BaseModel):
    n: int


@task_kind("test.fetch_fails", queue="test")
def _fetch_fails(inp: _In, ctx: TaskContext) -> _Out:
    raise FetchError("HTTP 404 from https://example.com/a.wav")


def test_worker_log_says_failure_where_celery_said_succeeded(
    settings: Settings, store: SqliteTaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.create(
        TaskRecord(
            id="t1", kind="test.fetch_fails", status=TaskStatus.QUEUED, submitted_at=utcnow()
        )
    )
    app = make_celery(settings, Registry([_fetch_fails]))
    with caplog.at_level(logging.INFO):
        app.tasks["test.fetch_fails"].apply(args=({"n": 1},), task_id="t1")
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "succeeded" in m], messages
    assert any("task t1 finished: FAILURE (fetch_failed)" in m for m in messages), messages


def test_task_failed_shows_the_error_type() -> None:
    error = TaskFailed("HTTP 404 from https://example.com/a.wav", error_type="fetch_failed")
    assert str(error) == "fetch_failed: HTTP 404 from https://example.com/a.wav"
    assert error.message == "HTTP 404 from https://example.com/a.wav"


def test_openapi_summaries_read_for_a_kind_whatever_its_first_letter(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/v1/tasks/audio.length"]["post"]["summary"] == "Submit one audio.length task"
    assert paths["/audio/length"]["post"]["summary"] == (
        "Submit one audio.length task (classic route)"
    )
