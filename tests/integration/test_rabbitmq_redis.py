"""The production engine end to end: real RabbitMQ, Redis, uvicorn and Celery workers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx

from .fixture_server import FixtureServer
from .http_api import submit_audio, wait_final
from .processes import ServiceProcess, descendants


def test_v1_submit_returns_the_audio_length(api: httpx.Client, files: FixtureServer) -> None:
    task = wait_final(api, submit_audio(api, files.url("tone-30s.wav")))
    assert task["status"] == "SUCCESS", task
    assert abs(task["result"]["audio_length"] - 30.0) <= 0.01
    assert task["result"]["format"] == "WAV"
    assert task["submitted_at"] <= task["started_at"] <= task["finished_at"]


def test_mp3_length_comes_back_through_the_stack(api: httpx.Client, files: FixtureServer) -> None:
    task = wait_final(api, submit_audio(api, files.url("tone-30s.mp3")))
    assert task["status"] == "SUCCESS", task
    assert abs(task["result"]["audio_length"] - 30.0) <= 0.1


def test_classic_client_gets_201_then_200_with_audio_length(
    api: httpx.Client, files: FixtureServer
) -> None:
    created = api.post(
        "/audio/length", json={"audio_url": files.url("tone-30s.wav"), "callback": False}
    )
    assert created.status_code == 201
    task_id = created.json()["id"]
    wait_final(api, task_id)
    response = api.get(f"/task/{task_id}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "status", "error", "result"}
    assert body["status"] == "SUCCESS"
    assert abs(body["result"]["audio_length"] - 30.0) <= 0.01


def test_classic_task_answers_202_while_running(api: httpx.Client, files: FixtureServer) -> None:
    task_id = api.post("/audio/length", json={"audio_url": files.url("gate/tone-5s.wav")}).json()[
        "id"
    ]
    assert files.gate_reached.wait(30), "the worker never fetched the gated URL"
    running = api.get(f"/task/{task_id}")
    assert running.status_code == 202
    assert running.json()["status"] == "STARTED"
    files.gate_open.set()
    wait_final(api, task_id)
    assert api.get(f"/task/{task_id}").status_code == 200


def test_long_poll_returns_as_soon_as_the_task_finishes(
    api: httpx.Client, files: FixtureServer
) -> None:
    task_id = submit_audio(api, files.url("gate/tone-5s.wav"))
    assert files.gate_reached.wait(30), "the worker never fetched the gated URL"
    answer: dict[str, Any] = {}

    def long_poll() -> None:
        started = time.monotonic()
        answer["task"] = api.get(f"/v1/tasks/{task_id}", params={"wait": 30}).json()
        answer["elapsed"] = time.monotonic() - started

    poller = threading.Thread(target=long_poll)
    poller.start()
    files.gate_open.set()
    poller.join(timeout=40)
    assert answer["task"]["status"] == "SUCCESS"
    assert answer["elapsed"] < 10, "long-poll waited far past the task's end"


def test_text_file_named_wav_fails_with_readable_error(
    api: httpx.Client, files: FixtureServer
) -> None:
    task = wait_final(api, submit_audio(api, files.url("notes.wav")))
    assert task["status"] == "FAILURE"
    assert task["error"]["type"] == "audio_not_audio"
    assert task["result"] is None


def test_missing_file_fails_naming_the_http_status(api: httpx.Client, files: FixtureServer) -> None:
    task = wait_final(api, submit_audio(api, files.url("missing.wav")))
    assert task["status"] == "FAILURE"
    assert task["error"]["type"] == "fetch_failed"
    assert "404" in task["error"]["message"]


def test_classic_failure_carries_the_error_message(api: httpx.Client, files: FixtureServer) -> None:
    task_id = api.post("/audio/length", json={"audio_url": files.url("notes.wav")}).json()["id"]
    wait_final(api, task_id)
    body = api.get(f"/task/{task_id}").json()
    assert body["status"] == "FAILURE"
    assert body["error"]


def test_cancelled_task_never_runs(api: httpx.Client, files: FixtureServer) -> None:
    blocker = submit_audio(api, files.url("gate/tone-5s.wav"))
    assert files.gate_reached.wait(30), "the worker never fetched the gated URL"
    victim = submit_audio(api, files.url("victim.wav"))
    cancelled = api.delete(f"/v1/tasks/{victim}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"
    follower = submit_audio(api, files.url("tone-5s.wav"))
    files.gate_open.set()
    # One worker slot, FIFO queue: once the follower is done the victim was consumed.
    assert wait_final(api, blocker)["status"] == "SUCCESS"
    assert wait_final(api, follower)["status"] == "SUCCESS"
    assert files.hits("victim.wav") == 0
    assert api.get(f"/v1/tasks/{victim}").json()["status"] == "CANCELLED"


def test_cancelling_a_running_task_returns_409(api: httpx.Client, files: FixtureServer) -> None:
    task_id = submit_audio(api, files.url("gate/tone-5s.wav"))
    assert files.gate_reached.wait(30), "the worker never fetched the gated URL"
    response = api.delete(f"/v1/tasks/{task_id}")
    assert response.status_code == 409
    files.gate_open.set()
    assert wait_final(api, task_id)["status"] == "SUCCESS"


def test_cancelling_a_finished_task_returns_409(api: httpx.Client, files: FixtureServer) -> None:
    task_id = submit_audio(api, files.url("tone-5s.wav"))
    wait_final(api, task_id)
    assert api.delete(f"/v1/tasks/{task_id}").status_code == 409


def test_unknown_id_returns_404(api: httpx.Client) -> None:
    assert api.get("/v1/tasks/00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.get("/task/00000000-0000-0000-0000-000000000000").status_code == 404


def test_invalid_input_returns_422(api: httpx.Client) -> None:
    response = api.post("/v1/tasks/audio.length", json={"audio_url": "ftp://example/a.wav"})
    assert response.status_code == 422
    assert "audio_url" in response.json()["message"]


def test_unknown_kind_returns_404(api: httpx.Client) -> None:
    assert api.post("/v1/tasks/no.such", json={}).status_code == 404


def test_readyz_reports_broker_and_store_ok(api: httpx.Client) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "broker": "ok", "result_store": "ok"}


def test_task_survives_its_worker_being_killed(
    api: httpx.Client, files: FixtureServer, worker: ServiceProcess
) -> None:
    task_id = submit_audio(api, files.url("gate/tone-5s.wav"))
    assert files.gate_reached.wait(30), "the worker never fetched the gated URL"
    worker.kill()
    files.gate_reached.clear()
    worker.start()
    worker.wait_for_line(" ready.")
    assert files.gate_reached.wait(60), "the task was not redelivered to the new worker"
    files.gate_open.set()
    task = wait_final(api, task_id)
    assert task["status"] == "SUCCESS"
    assert files.hits("gate/tone-5s.wav") == 2


def test_task_survives_its_pool_process_being_killed(
    api: httpx.Client, files: FixtureServer, worker: ServiceProcess
) -> None:
    """kill -9 of the process running the task (an OOM kill), the worker's main process
    lives on: the message comes back, the task runs again and ends SUCCESS once."""
    task_id = submit_audio(api, files.url("gate/tone-5s.wav"))
    assert files.gate_reached.wait(30), "the worker never fetched the gated URL"
    assert worker.proc is not None
    pool = descendants(worker.proc.pid)
    assert pool, "the worker has no pool process"
    files.gate_reached.clear()
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    assert files.gate_reached.wait(60), "the task was not redelivered"
    files.gate_open.set()
    task = wait_final(api, task_id)
    assert task["status"] == "SUCCESS"
    assert abs(task["result"]["audio_length"] - 5.0) <= 0.01
    assert files.hits("gate/tone-5s.wav") == 2  # the killed run and the one that finished


def test_worker_logs_are_json_lines_carrying_the_task_id(
    api: httpx.Client, files: FixtureServer, worker: ServiceProcess
) -> None:
    task_id = submit_audio(api, files.url("notes.wav"))
    wait_final(api, task_id)
    # The record is final a moment before the worker logs so: wait for the line itself.
    worker.wait_for_line(f"task {task_id} finished: FAILURE", timeout=30)
    # Celery's start-up banner is plain text; every log record is one JSON object.
    text = worker.log_path.read_text().splitlines()
    lines = [json.loads(line) for line in text if line.startswith("{")]
    about_task = [line for line in lines if line.get("task_id") == task_id]
    assert about_task, "no log line carries the task id"
    assert all(line["kind"] == "audio.length" for line in about_task)
    assert any("FAILURE" in line["message"] for line in about_task)
