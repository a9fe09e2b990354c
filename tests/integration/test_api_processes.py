"""Several API processes on one embedded data folder: what they share and that each serves.

`asyncml up` runs two API processes where there are two CPUs (ASYNCML_API_PROCESSES, 0:
auto), as uvicorn workers on one port. Whichever process takes a request, it sees every
task, is woken when a task another process queued finishes, and counts a key's requests
in the one count every process of the folder shares.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .processes import (
    Launcher,
    ServiceProcess,
    descendants,
    run_cli,
    service_env,
    wait_until_ready,
)
from .services import free_ports

IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _api_processes(up: ServiceProcess) -> list[int]:
    """The processes serving HTTP below `up`: uvicorn's workers under `asyncml api`."""
    assert up.proc is not None
    return [pid for pid in descendants(up.proc.pid) if _is_api_process(pid)]


def _connections_to(port: int) -> dict[int, int]:
    """Established connections to `port` held by each process (pid -> count)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED, the server's end
                inodes.add(fields[9])
    held: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        count = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
        if count:
            held[int(entry.name)] = count
    return held


def _spread_over(serving: list[int], base_url: str, port: int) -> list[httpx.Client]:
    """16 connections held open at once, which the kernel hands to every serving process.

    /readyz answered once the first process was ready: until the other accepts too, every
    connection goes to the first, so a set that missed a process is made again."""
    deadline = time.monotonic() + 30
    while True:
        clients = [httpx.Client(base_url=base_url, timeout=30) for _ in range(16)]
        for client in clients:
            assert client.get("/healthz").status_code == 200
        held = _connections_to(port)
        if {pid for pid in serving if held.get(pid)} == set(serving):
            return clients
        for client in clients:
            client.close()
        assert time.monotonic() < deadline, f"connections not spread: {serving} {held}"
        time.sleep(0.5)  # the other process finishing its start-up


@pytest.fixture
def up_default(tmp_path: Path) -> Iterator[tuple[ServiceProcess, str, int]]:
    """`asyncml up` with the service's own API process count (no ASYNCML_API_PROCESSES)."""
    (port,) = free_ports(1)
    env = service_env(data_dir=tmp_path / "data", api_port=port, api_processes=None)
    launch = Launcher(env, tmp_path)
    up = launch("up", ["up", "--concurrency", "1"])
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", up, timeout=90)
        yield up, f"http://127.0.0.1:{port}", port
    finally:
        launch.stop_all()


@pytest.mark.timeout(120)
def test_up_runs_an_api_process_per_cpu_up_to_two_and_each_answers_waits(
    up_default: tuple[ServiceProcess, str, int],
) -> None:
    up, base_url, port = up_default
    serving = _api_processes(up)
    assert len(serving) == min(2, os.cpu_count() or 1), serving
    clients = _spread_over(serving, base_url, port)
    try:

        def submit_then_wait(client: httpx.Client) -> tuple[int, str]:
            # Submitted on one connection, awaited on it: whichever process holds it is
            # woken by the models worker's commit, not by its own submit.
            created = client.post("/v1/tasks/model.iris", json=IRIS)
            assert created.status_code == 202, created.text
            done = client.get(f"/v1/tasks/{created.json()['id']}", params={"wait": 20})
            return done.status_code, done.json()["status"]

        with ThreadPoolExecutor(len(clients)) as pool:
            answers = list(pool.map(submit_then_wait, clients))
        assert answers == [(200, "SUCCESS")] * len(clients)
        # Every process sees every task: the list is the same whoever answers.
        listed = {len(c.get("/v1/tasks", params={"limit": 100}).json()["tasks"]) for c in clients}
        assert listed == {len(clients)}
    finally:
        for client in clients:
            client.close()


@pytest.mark.timeout(120)
def test_a_keys_rate_is_one_count_for_every_api_process_of_a_data_folder(
    tmp_path: Path,
) -> None:
    ports = free_ports(2)
    env = service_env(data_dir=tmp_path / "data", api_port=ports[0], extra={"ASYNCML_AUTH": "on"})
    created = run_cli("keys", "create", "tiny", "--rate", "4/minute", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    launch = Launcher(env, tmp_path)
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for port, url in zip(ports, urls, strict=True):
            wait_until_ready(url, launch(f"api-{port}", ["api", "--port", str(port)]))
        codes = [
            httpx.get(f"{urls[i % 2]}/v1/tasks", headers=headers, timeout=10).status_code
            for i in range(8)  # alternating: each process alone would allow 4 of its own
        ]
    finally:
        launch.stop_all()
    assert codes == [200, 200, 200, 200, 429, 429, 429, 429]


@pytest.mark.timeout(120)
def test_api_processes_that_cannot_start_make_asyncml_api_fail(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = service_env(
        data_dir=tmp_path / "data",
        api_port=port,
        api_processes=2,
        extra={"ASYNCML_API_KEYS_FILE": str(tmp_path / "missing")},
    )
    done = run_cli("api", env=env, cwd=tmp_path)
    assert done.returncode == 3, done.stderr[-2000:]  # uvicorn's start-up failure


@pytest.mark.timeout(120)
def test_api_processes_die_with_the_process_that_spawned_them(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = service_env(data_dir=tmp_path / "data", api_port=port, api_processes=2)
    launch = Launcher(env, tmp_path)
    try:
        api = launch("api", ["api"])
        wait_until_ready(f"http://127.0.0.1:{port}", api)
        assert api.proc is not None
        spawned = [pid for pid in descendants(api.proc.pid) if _is_api_process(pid)]
        assert len(spawned) == 2
        os.kill(api.proc.pid, signal.SIGKILL)  # the parent alone, as the OOM killer would
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in spawned):
            assert time.monotonic() < deadline, "an API process outlived its parent"
            time.sleep(0.1)  # their SIGTERM (parent-death signal), then a graceful stop
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        launch.stop_all()


def _is_api_process(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
