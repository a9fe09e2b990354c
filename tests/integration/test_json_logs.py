"""With ``ASYNCML_LOG_FORMAT=json`` every line a process writes is one JSON object (issue 18,
"Also"): Celery's and Kombu's lines included, and the line billiard writes when a pool
process dies, which was plain text.

A real `asyncml api` and `asyncml worker` on the embedded engine; the task's pool process
is SIGKILLed while it waits on a gated download, as an out-of-memory kill would end it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fixture_server import FixtureServer
from .http_api import submit_audio
from .processes import Launcher, ServiceProcess, descendants, service_env, wait_until_ready
from .services import free_ports

POOL_DIED = "exited with 'signal 9 (SIGKILL)'"


def _lines(process: ServiceProcess) -> list[dict[str, Any]]:
    """Every line the process wrote (stdout and stderr), each parsed as JSON."""
    parsed = []
    for number, line in enumerate(process.log_path.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"{process.name} line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message", "role"} <= entry.keys(), line
        parsed.append(entry)
    return parsed


@pytest.mark.timeout(180)
def test_every_line_of_the_api_and_a_worker_whose_pool_process_dies_is_json(
    tmp_path: Path, files: FixtureServer
) -> None:
    (port,) = free_ports(1)
    env = service_env(
        data_dir=tmp_path / "data", api_port=port, extra={"ASYNCML_LOG_FORMAT": "json"}
    )
    launch = Launcher(env, tmp_path)
    try:
        api_process = launch("api", ["api"])
        worker = launch("worker", ["worker", "--queues", "audio", "--concurrency", "1"])
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, api_process)
        worker.wait_for_line(" ready.", 60)
        with httpx.Client(base_url=base_url, timeout=60) as api:
            submit_audio(api, files.url("gate/tone-5s.wav"))
            assert files.gate_reached.wait(60), "the task never fetched its URL"
            assert worker.proc is not None
            (pool_process,) = descendants(worker.proc.pid)
            os.kill(pool_process, signal.SIGKILL)
            worker.wait_for_line(POOL_DIED, 30)
            files.gate_open.set()  # a redelivered run may finish: the stop is quick
        worker.stop()
        api_process.stop()
    finally:
        launch.stop_all()

    worker_lines = _lines(worker)
    loggers = {entry["logger"] for entry in worker_lines}
    assert any(name.startswith("celery.") for name in loggers), loggers
    assert any(name.startswith("kombu") or "consumer" in name for name in loggers), loggers
    assert any(e["message"].endswith(" ready.") for e in worker_lines)  # Celery's start-up
    (died,) = [e for e in worker_lines if POOL_DIED in e["message"]]
    assert died["level"] == "ERROR"
    assert any("Warm shutdown" in e["message"] for e in worker_lines)  # printed by Celery
    assert {e["role"] for e in worker_lines} == {"worker"}
    api_lines = _lines(api_process)
    assert any(e["logger"] == "uvicorn.access" for e in api_lines)
    assert all("color_message" not in e for e in api_lines)
