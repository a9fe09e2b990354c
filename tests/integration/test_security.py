"""Attacks on a keyed deployment: two real API processes (keys on) on the session's RabbitMQ
and Redis, keys made with the real CLI, the session worker running the tasks.

Covers the Security section's promises: no key sees another's tasks on any route, a revoked
key is refused by every API process within a second, a key's rate is shared by all API
processes, a flood past the queue cap is refused and not queued, a client that drips its
headers is cut off, and a URL that redirects to an internal address is never fetched.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from asyncml.api.limits import DEPTH_TTL_S
from asyncml.auth import CACHE_S

from .fixture_server import FixtureServer
from .http_api import wait_final
from .processes import ServiceProcess, service_env, wait_until_ready
from .services import RabbitMQServer, RedisServer, free_ports

DRAW = {"draw_date": "20-11-2026"}


@dataclass
class KeyedStack:
    env: dict[str, str]
    urls: list[str]
    workdir: Path

    def keys(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``asyncml keys ...`` against the deployment's Redis, as an operator runs it."""
        return subprocess.run(
            [sys.executable, "-m", "asyncml", "keys", *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def new_key(self, name: str, *options: str) -> dict[str, str]:
        key = self.keys("create", f"{name}-{time.monotonic_ns()}", *options).stdout.strip()
        assert key.startswith("aml_")
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory,
    stack_env: tuple[dict[str, str], str, Path],
) -> Iterator[KeyedStack]:
    """Two API processes with keys on, sharing the session stack's broker and store."""
    base_env, _, _ = stack_env
    workdir = tmp_path_factory.mktemp("keyed")
    ports = free_ports(2)
    env = dict(base_env) | {"ASYNCML_AUTH": "on", "ASYNCML_API_HEADER_TIMEOUT_S": "2"}
    processes = [
        ServiceProcess(f"api-{port}", ["api", "--port", str(port)], env=env, workdir=workdir)
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for process, url in zip(processes, urls, strict=True):
            process.start()
            wait_until_ready(url, process)
        yield KeyedStack(env, urls, workdir)
    finally:
        for process in processes:
            process.stop()


@pytest.mark.timeout(90)
def test_two_keys_cannot_see_each_others_tasks_on_any_route(
    keyed: KeyedStack, worker: ServiceProcess, euro_pages: FixtureServer
) -> None:
    alice, bob = keyed.new_key("alice"), keyed.new_key("bob")
    with httpx.Client(base_url=keyed.urls[0], timeout=30) as api:
        queued = api.post("/v1/tasks/euro.results", json=DRAW, headers=alice).json()["id"]
        finished = api.post("/euro/results", json={"draw_date": "17-11-2026"}, headers=alice)
        done_id = finished.json()["id"]
        done = api.get(f"/v1/tasks/{done_id}?wait=20", headers=alice).json()
        assert done["status"] in {"SUCCESS", "FAILURE"}, done  # ran (the page may 404)
        for task_id in (queued, done_id):
            assert api.get(f"/v1/tasks/{task_id}", headers=bob).status_code == 404
            assert api.get(f"/v1/tasks/{task_id}?wait=0.5", headers=bob).status_code == 404
            assert api.delete(f"/v1/tasks/{task_id}", headers=bob).status_code == 404
            assert api.get(f"/task/{task_id}", headers=bob).status_code == 404
        assert api.get("/v1/tasks", headers=bob).json() == {"tasks": [], "next_cursor": None}
        mine = api.get("/v1/tasks", headers=alice).json()["tasks"]
        assert {t["id"] for t in mine} == {queued, done_id}
        assert api.get(f"/task/{done_id}", headers=alice).status_code == 200


@pytest.mark.timeout(60)
def test_revoked_key_is_refused_by_every_api_process_within_a_second(keyed: KeyedStack) -> None:
    name = f"carol-{time.monotonic_ns()}"
    key = keyed.keys("create", name).stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    for url in keyed.urls:
        assert httpx.get(f"{url}/v1/tasks", headers=headers).status_code == 200
    listed = json.loads(keyed.keys("list", "--json").stdout)
    assert name in [k["name"] for k in listed]
    assert all(key not in json.dumps(k) for k in listed)  # only digests are kept
    keyed.keys("revoke", name)
    revoked_at = time.monotonic()
    for url in keyed.urls:  # each process looked the key up (and remembered it) before
        while True:
            asked_after = time.monotonic() - revoked_at
            refused = httpx.get(f"{url}/v1/tasks", headers=headers)
            if refused.status_code != 200:
                break
            assert asked_after < CACHE_S + 1.0, f"{url} still accepts it after {asked_after:.2f} s"
            time.sleep(0.05)  # probe interval, bounded by the assertion above
        assert refused.status_code == 401, url
        assert refused.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.timeout(60)
def test_rate_limited_key_gets_429_with_retry_after_on_every_api_process(
    keyed: KeyedStack,
) -> None:
    headers = keyed.new_key("tiny", "--rate", "4/minute")
    codes: list[int] = []
    limited: list[httpx.Response] = []
    for i in range(8):  # alternate the two API processes: one count in Redis for both
        response = httpx.get(f"{keyed.urls[i % 2]}/v1/tasks", headers=headers)
        codes.append(response.status_code)
        if response.status_code == 429:
            limited.append(response)
    assert codes.count(200) == 4, codes
    assert codes.count(429) == 4, codes
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert limited[0].headers["ratelimit-limit"] == "4"
    assert limited[0].headers["ratelimit-remaining"] == "0"


@pytest.mark.timeout(60)
def test_client_that_drips_its_headers_is_disconnected(keyed: KeyedStack) -> None:
    port = int(keyed.urls[0].rsplit(":", 1)[1])
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v1/tasks HTTP/1.1\r\nHost: x\r\n")
        closed_after = None
        for _ in range(40):  # a header line every 0.25 s, never the end of the headers
            try:
                sock.sendall(b"X-Drip: 1\r\n")
                time.sleep(0.25)
                if sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                    closed_after = time.monotonic() - began
                    break
            except BlockingIOError:
                continue
            except OSError:
                closed_after = time.monotonic() - began
                break
    assert closed_after is not None, "the connection was still open after 10 s"
    assert 1.5 <= closed_after < 4.0  # ASYNCML_API_HEADER_TIMEOUT_S=2
    # The server is fine for everyone else.
    assert httpx.get(f"{keyed.urls[0]}/healthz").status_code == 200


@pytest.mark.timeout(90)
def test_url_that_redirects_to_an_internal_address_is_never_fetched(
    api: httpx.Client, files: FixtureServer
) -> None:
    files.gate_open.set()
    target = "http://169.254.169.254/latest/meta-data/"
    url = files.url(f"redirect?to={quote(target, safe='')}")
    task_id = api.post("/v1/tasks/audio.length", json={"audio_url": url}).json()["id"]
    task = wait_final(api, task_id)
    assert task["status"] == "FAILURE"
    assert task["error"]["type"] == "blocked_destination"
    assert "169.254.169.254" in task["error"]["message"]
    # The same address given directly is refused at the door: nothing queued.
    direct = api.post("/v1/tasks/audio.length", json={"audio_url": target})
    assert direct.status_code == 422
    assert "link-local" in direct.json()["message"]


@pytest.mark.timeout(120)
def test_flood_past_the_queue_cap_is_refused_not_queued(
    tmp_path: Path, private_rabbitmq_server: RabbitMQServer, redis_server: RedisServer
) -> None:
    """No worker consumes this broker: accepted tasks stay queued, and the cap holds."""
    (port,) = free_ports(1)
    env = service_env(
        data_dir=tmp_path / "data",
        api_port=port,
        broker_url=private_rabbitmq_server.url,
        backend_url=redis_server.url,
        extra={"ASYNCML_MAX_QUEUE_DEPTH": "10"},
    )
    process = ServiceProcess("api-capped", ["api"], env=env, workdir=tmp_path).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        with httpx.Client(base_url=base, timeout=30) as api:

            def admitted() -> bool:
                """Submit once: accepted, or refused as a full queue and nothing else."""
                response = api.post("/v1/tasks/euro.results", json=DRAW)
                if response.status_code == 202:
                    return True
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "5"
                assert "full" in response.json()["message"]
                return False

            began = time.monotonic()
            answers = [admitted() for _ in range(12)]  # one reading (empty) may admit them all
            while answers[-1]:  # the API reads the depths again within a second: until then
                assert time.monotonic() - began < DEPTH_TTL_S + 2, "still admitting past the cap"
                time.sleep(0.1)  # probe interval, bounded by the assertion above
                answers.append(admitted())
            answers += [admitted() for _ in range(16)]
        depth = private_rabbitmq_server.rabbitmqctl(
            "list_queues",
            *("-p", private_rabbitmq_server.vhost, "-q", "--no-table-headers", "name", "messages"),
        )
    finally:
        process.stop()
    queued = {line.split()[0]: int(line.split()[1]) for line in depth.splitlines() if line}
    accepted, refused = answers.count(True), answers.count(False)
    print(f"accepted {accepted}, refused {refused}, queued {queued.get('euro')}")  # for -rP
    assert queued["euro"] == accepted  # every accepted task is queued, no refused one is
    assert accepted >= 10  # the cap
    # Once full, the queue stays full (nothing consumes it): every later submit is refused.
    assert True not in answers[answers.index(False) :], answers
