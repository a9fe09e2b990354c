"""Poison tasks on both engines: real RabbitMQ, Redis (or the embedded SQLite engine under
`asyncml up`), API, worker and `asyncml dlq`.

The task's worker process is SIGKILLed while it runs, every time, as an out-of-memory kill
or a segfault would end it; the worker's main process survives, RabbitMQ redelivers.
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
from .http_api import submit_audio, wait_final
from .processes import (
    Launcher,
    ServiceProcess,
    descendants,
    run_cli,
    service_env,
    wait_until_ready,
)
from .services import free_ports

MAX_ATTEMPTS = 3  # audio.length's Limits.max_attempts


def dlq(env: dict[str, str], workdir: Path, *args: str) -> Any:
    """`asyncml dlq ... --json` against the stack's broker and store; its parsed output."""
    done = run_cli("dlq", *args, "--json", env=env, cwd=workdir, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def kill_the_task_process(worker: ServiceProcess) -> None:
    """SIGKILL the worker's pool processes (one: it runs with --concurrency 1)."""
    assert worker.proc is not None
    children = descendants(worker.proc.pid)
    assert children, "the worker has no pool process"
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(240)
def test_poison_task_reaches_the_dead_letter_queue_after_its_attempts(
    api: httpx.Client,
    files: FixtureServer,
    worker: ServiceProcess,
    stack_env: tuple[dict[str, str], str, Path],
) -> None:
    env, _, workdir = stack_env
    url = files.url("gate/tone-5s.wav")
    task_id = submit_audio(api, url)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert files.gate_reached.wait(60), f"attempt {attempt} never fetched the gated URL"
        files.gate_reached.clear()
        kill_the_task_process(worker)

    task = wait_final(api, task_id)
    worker.wait_for_line(f"task {task_id}: its worker died on {MAX_ATTEMPTS} attempts", 30)
    assert task["status"] == "FAILURE", task
    assert task["error"]["type"] == "worker_lost"
    assert task["error"]["attempts"] == MAX_ATTEMPTS
    assert files.hits("gate/tone-5s.wav") == MAX_ATTEMPTS  # the last delivery did not run it

    (entry,) = [e for e in dlq(env, workdir, "list") if e["task_id"] == task_id]
    assert entry["kind"] == "audio.length"
    assert entry["payload"] == {"audio_url": url}
    assert entry["attempts"] == MAX_ATTEMPTS
    assert entry["error"]["type"] == "worker_lost"

    files.gate_open.set()  # the cause is fixed: the replay can run
    replayed = dlq(env, workdir, "retry", task_id)
    assert replayed["failed"] == []
    ((old_id, new_id),) = [(r["task_id"], r["new_task_id"]) for r in replayed["replayed"]]
    assert old_id == task_id and new_id != task_id

    again = wait_final(api, new_id)
    assert again["status"] == "SUCCESS", again
    assert abs(again["result"]["audio_length"] - 5.0) <= 0.01
    assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "FAILURE"  # never moved back
    assert all(e["task_id"] != task_id for e in dlq(env, workdir, "list"))


def _pool_of_the_audio_worker(up: ServiceProcess) -> list[int]:
    """The pool processes of the worker that serves the audio queue under `asyncml up`."""
    assert up.proc is not None
    procs = {}
    for pid in descendants(up.proc.pid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        procs[pid] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    mains = [pid for pid, (_, cmd) in procs.items() if "--queues audio" in cmd]
    return [pid for pid, (ppid, _) in procs.items() if ppid in mains]


@pytest.mark.timeout(240)
def test_poison_task_reaches_the_dead_letter_queue_on_the_embedded_engine(
    tmp_path: Path, files: FixtureServer
) -> None:
    (port,) = free_ports(1)
    env = service_env(data_dir=tmp_path / "data", api_port=port)
    launch = Launcher(env, tmp_path)
    try:
        up = launch("up", ["up", "--concurrency", "1"])
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, up)
        with httpx.Client(base_url=base_url, timeout=40) as api:
            task_id = submit_audio(api, files.url("gate/tone-5s.wav"))
            for attempt in range(1, MAX_ATTEMPTS + 1):
                assert files.gate_reached.wait(60), f"attempt {attempt} never fetched its URL"
                files.gate_reached.clear()
                pool = _pool_of_the_audio_worker(up)
                assert pool, "the audio worker has no pool process"
                for pid in pool:
                    os.kill(pid, signal.SIGKILL)
            task = wait_final(api, task_id)
        assert task["status"] == "FAILURE", task
        assert task["error"]["type"] == "worker_lost"
        assert task["error"]["attempts"] == MAX_ATTEMPTS
        (entry,) = [e for e in dlq(env, tmp_path, "list") if e["task_id"] == task_id]
        assert entry["payload"] == {"audio_url": files.url("gate/tone-5s.wav")}
    finally:
        launch.stop_all()
