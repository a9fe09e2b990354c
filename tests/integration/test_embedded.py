"""The embedded default end to end: `asyncml up` on SQLite, no server installed."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .fixture_server import FixtureServer
from .http_api import wait_final
from .processes import Launcher, service_env, wait_until_ready
from .services import free_ports


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Launcher, str]]:
    """Start asyncml roles on one embedded data folder and one API port; stop all after."""
    (port,) = free_ports(1)
    launch = Launcher(service_env(data_dir=tmp_path / "data", api_port=port), tmp_path)
    yield launch, f"http://127.0.0.1:{port}"
    launch.stop_all()


def test_up_serves_the_classic_flow(embedded: tuple[Launcher, str], files: FixtureServer) -> None:
    launch, base_url = embedded
    up = launch("up", ["up", "--concurrency", "1"])
    wait_until_ready(base_url, up)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        created = api.post("/audio/length", json={"audio_url": files.url("tone-30s.wav")})
        assert created.status_code == 201
        task_id = created.json()["id"]
        wait_final(api, task_id)
        response = api.get(f"/task/{task_id}")
    assert response.status_code == 200
    assert abs(response.json()["result"]["audio_length"] - 30.0) <= 0.01


def test_up_exports_the_workers_task_metrics_through_the_api(
    embedded: tuple[Launcher, str], files: FixtureServer
) -> None:
    launch, base_url = embedded
    up = launch("up", ["up", "--concurrency", "2"])
    wait_until_ready(base_url, up)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        for name in ("tone-5s.wav", "tone-5s.wav", "notes.wav"):
            task_id = api.post("/v1/tasks/audio.length", json={"audio_url": files.url(name)})
            wait_final(api, task_id.json()["id"])
        text = api.get("/metrics").text
    # Measured in the worker's pool children, summed across processes by the API.
    assert 'asyncml_tasks_finished_total{kind="audio.length",status="SUCCESS"} 2.0' in text
    assert 'asyncml_tasks_finished_total{kind="audio.length",status="FAILURE"} 1.0' in text
    assert 'asyncml_task_run_seconds_count{kind="audio.length"} 3.0' in text
    assert 'asyncml_task_queue_wait_seconds_count{kind="audio.length"} 3.0' in text
    assert 'asyncml_tasks_submitted_total{kind="audio.length"} 3.0' in text


def test_separate_worker_serves_its_own_metrics(tmp_path: Path, files: FixtureServer) -> None:
    api_port, metrics_port = free_ports(2)
    env = service_env(
        data_dir=tmp_path / "data",
        api_port=api_port,
        extra={"ASYNCML_WORKER_METRICS_PORT": str(metrics_port)},
    )
    launch = Launcher(env, tmp_path)
    try:
        api_process = launch("api", ["api"])
        worker = launch("worker", ["worker", "--concurrency", "2"])
        base_url = f"http://127.0.0.1:{api_port}"
        wait_until_ready(base_url, api_process)
        worker.wait_for_line(" ready.")
        with httpx.Client(base_url=base_url, timeout=40) as api:
            for _ in range(2):
                task_id = api.post(
                    "/v1/tasks/audio.length", json={"audio_url": files.url("tone-5s.wav")}
                ).json()["id"]
                wait_final(api, task_id)
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        launch.stop_all()
    assert 'asyncml_tasks_finished_total{kind="audio.length",status="SUCCESS"} 2.0' in text


def test_ctrl_c_stops_up_and_everything_it_started(
    embedded: tuple[Launcher, str],
) -> None:
    launch, base_url = embedded
    up = launch("up", ["up", "--concurrency", "1"])
    wait_until_ready(base_url, up)
    up.wait_for_line(" ready.")
    assert up.interrupt(timeout=60) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base_url}/healthz", timeout=2)
    assert "all stopped" in up.tail()


def test_queued_tasks_survive_a_restart(
    embedded: tuple[Launcher, str], files: FixtureServer
) -> None:
    launch, base_url = embedded
    api_only = launch("api", ["api"])
    wait_until_ready(base_url, api_only)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        ids = [
            api.post("/v1/tasks/audio.length", json={"audio_url": files.url(name)}).json()["id"]
            for name in ("tone-5s.wav", "tone-30s.wav", "tone-30s.flac")
        ]
        assert all(api.get(f"/v1/tasks/{i}").json()["status"] == "QUEUED" for i in ids)
    api_only.stop()

    up = launch("up", ["up", "--concurrency", "1"])
    wait_until_ready(base_url, up)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        tasks = [wait_final(api, i) for i in ids]
    assert [t["status"] for t in tasks] == ["SUCCESS"] * 3
    assert [round(t["result"]["audio_length"]) for t in tasks] == [5, 30, 30]


def test_running_up_deletes_the_messages_of_finished_tasks(
    embedded: tuple[Launcher, str],
) -> None:
    launch, base_url = embedded
    launch.env.update(
        ASYNCML_EMBEDDED_SWEEP_INTERVAL_S="0.5",
        ASYNCML_DEBUG_KINDS="true",
        ASYNCML_MODELS_BUNDLED="false",
    )
    up = launch("up", ["up", "--concurrency", "2"])
    wait_until_ready(base_url, up)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        ids = [
            api.post("/v1/tasks/debug.echo", json={"payload": {"n": n}}).json()["id"]
            for n in range(6)
        ]
        assert [wait_final(api, i)["status"] for i in ids] == ["SUCCESS"] * 6
    broker = Path(launch.env["ASYNCML_DATA_DIR"]) / "broker.sqlite3"
    deadline = time.monotonic() + 15
    while (left := _messages_of(broker, ids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Swept while `up` runs, not kept until the next start.
    assert left == 0, f"{left} messages of finished tasks still in the broker after 15 s"


def _messages_of(broker: Path, task_ids: list[str]) -> int:
    conn = sqlite3.connect(broker, timeout=10)
    try:
        payloads = [row[0] for row in conn.execute("SELECT payload FROM kombu_message")]
    finally:
        conn.close()
    return sum(1 for payload in payloads for task_id in task_ids if task_id in payload)


def test_cancelled_task_never_runs_on_the_embedded_broker(
    embedded: tuple[Launcher, str], files: FixtureServer
) -> None:
    launch, base_url = embedded
    api_only = launch("api", ["api"])
    wait_until_ready(base_url, api_only)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        victim = api.post("/v1/tasks/audio.length", json={"audio_url": files.url("victim.wav")})
        follower = api.post("/v1/tasks/audio.length", json={"audio_url": files.url("tone-5s.wav")})
        assert api.delete(f"/v1/tasks/{victim.json()['id']}").status_code == 200
    api_only.stop()

    up = launch("up", ["up", "--concurrency", "1"])
    wait_until_ready(base_url, up)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        # FIFO with one slot: the follower finishing means the victim was consumed first.
        assert wait_final(api, follower.json()["id"])["status"] == "SUCCESS"
        assert api.get(f"/v1/tasks/{victim.json()['id']}").json()["status"] == "CANCELLED"
    assert files.hits("victim.wav") == 0


def test_task_of_a_killed_embedded_worker_is_recovered_by_the_next_up(
    embedded: tuple[Launcher, str], files: FixtureServer
) -> None:
    launch, base_url = embedded
    up = launch("up", ["up", "--concurrency", "1"])
    wait_until_ready(base_url, up)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        task_id = api.post(
            "/v1/tasks/audio.length", json={"audio_url": files.url("gate/tone-5s.wav")}
        ).json()["id"]
        assert files.gate_reached.wait(30), "the worker never fetched the gated URL"
    up.kill()
    files.gate_reached.clear()

    again = launch("up-again", ["up", "--concurrency", "1"])
    wait_until_ready(base_url, again)
    assert files.gate_reached.wait(60), "the task was not recovered after the crash"
    files.gate_open.set()
    with httpx.Client(base_url=base_url, timeout=40) as api:
        assert wait_final(api, task_id)["status"] == "SUCCESS"


# The longest fallback poll there is: Celery's loop also ends each wait after 2 s, so an
# idle worker looks at SQLite every 2 s at most; a wake-up must come far sooner than that.
_FALLBACK_S = 5.0
_LOOP_S = 2.0
_PROMPT_S = 1.0


def _echo_seconds(api: httpx.Client) -> float:
    """Submit one debug.echo and long-poll it: seconds from submit to its result."""
    began = time.monotonic()
    task_id = api.post("/v1/tasks/debug.echo", json={"payload": {"n": 1}}).json()["id"]
    assert wait_final(api, task_id)["status"] == "SUCCESS"
    return time.monotonic() - began


@pytest.fixture
def idle_up(embedded: tuple[Launcher, str]) -> Iterator[tuple[httpx.Client, Path]]:
    """`asyncml up` (echo served, no model worker) whose worker is ready and has run a task."""
    launch, base_url = embedded
    launch.env.update(
        ASYNCML_EMBEDDED_POLL_INTERVAL_S=str(_FALLBACK_S),
        ASYNCML_DEBUG_KINDS="true",
        ASYNCML_MODELS_BUNDLED="false",
    )
    up = launch("up", ["up", "--concurrency", "1"])
    up.wait_for_line(" ready.", timeout=60)
    wait_until_ready(base_url, up)
    with httpx.Client(base_url=base_url, timeout=40) as api:
        _echo_seconds(api)  # the worker's first task: imports, connections
        yield api, Path(launch.env["ASYNCML_DATA_DIR"])


def test_idle_up_runs_each_new_task_at_once_not_at_its_fallback_poll(
    idle_up: tuple[httpx.Client, Path],
) -> None:
    api, _ = idle_up
    # Each task arrives while the worker waits; only polled, half would wait over a second.
    took = [_echo_seconds(api) for _ in range(6)]
    assert max(took) < _PROMPT_S, took


def test_task_whose_wake_up_was_missed_runs_at_the_fallback_poll(
    idle_up: tuple[httpx.Client, Path],
) -> None:
    api, data_dir = idle_up
    shutil.rmtree(data_dir / "wake")  # the workers' registrations gone: nobody is woken
    assert _echo_seconds(api) < _LOOP_S + 10
    # The fallback poll also put the registration back: wake-ups work again.
    assert (data_dir / "wake" / "debug").is_dir()
    assert _echo_seconds(api) < _PROMPT_S
