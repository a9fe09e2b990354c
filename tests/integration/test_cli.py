"""The `asyncml` client commands against the real stack, as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from .fixture_server import FixtureServer
from .services import free_ports


def asyncml(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncml", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def base_url(api: httpx.Client) -> str:
    return str(api.base_url).rstrip("/")


def test_submit_and_wait_prints_the_result_as_json(api: httpx.Client, files: FixtureServer) -> None:
    done = asyncml(
        "submit", "audio.length", "--audio-url", files.url("tone-30s.wav"),
        "--wait", "--json", "--url", base_url(api),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["status"] == "SUCCESS"
    assert abs(task["result"]["audio_length"] - 30.0) <= 0.01


def test_status_shows_a_submitted_task(api: httpx.Client, files: FixtureServer) -> None:
    task_id = api.post("/v1/tasks/audio.length", json={"audio_url": files.url("tone-5s.wav")})
    shown = asyncml(
        "status", task_id.json()["id"], "--wait", "30", "--json", "--url", base_url(api)
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "SUCCESS"


def test_failed_task_exits_1(api: httpx.Client, files: FixtureServer) -> None:
    done = asyncml(
        "submit", "audio.length", "--audio-url", files.url("notes.wav"),
        "--wait", "--json", "--url", base_url(api),
    )  # fmt: skip
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["type"] == "audio_not_audio"


def test_invalid_input_exits_2_with_the_server_message(api: httpx.Client) -> None:
    done = asyncml("submit", "audio.length", "--audio-url", "nope", "--url", base_url(api))
    assert done.returncode == 2
    assert "audio_url" in done.stderr


def test_unknown_id_exits_2(api: httpx.Client) -> None:
    done = asyncml("status", "no-such-id", "--url", base_url(api))
    assert done.returncode == 2
    assert "task_not_found" in done.stderr


def test_missing_option_is_a_usage_error() -> None:
    assert asyncml("submit", "audio.length").returncode == 2


def test_unreachable_service_exits_3(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    done = asyncml("status", "some-id", "--url", f"http://127.0.0.1:{port}")
    assert done.returncode == 3
    assert "service_unavailable" in done.stderr


def test_kinds_lists_audio_length(api: httpx.Client) -> None:
    done = asyncml("kinds", "--json", "--url", base_url(api))
    assert done.returncode == 0
    assert "audio.length" in {k["name"] for k in json.loads(done.stdout)}
