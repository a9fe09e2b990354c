"""Scale-out, proven on one machine: hosts made of network namespaces on a virtual switch.

RabbitMQ and Redis run on `broker`, the API on `api`, a worker on each of `w1`, `w2` and
later `w3`, the audio files on `files`, and the test's HTTP client on `client`; they
talk by address over 10.231.0.0/24, never over loopback (netns.py).

A task record does not name the worker that ran it, so the files host counts requests
by source address: every worker host has its own, and every task its own URL, so a
task run twice shows as a path requested twice.

The files host answers each request after ORIGIN_DELAY_S: that delay is the simulated
work of a task (a slow origin), not synchronisation. It makes a task cost the same wall
time on any host and little CPU, so throughput counts worker slots; on a 2-core machine
CPU-bound tasks could not show what a third host adds.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from asyncml.auth import key_file_line, make_key

from .http_api import submit_audio, wait_final
from .netns import NetnsUnavailable, Network
from .processes import ServiceProcess, service_env, wait_until_ready
from .services import RabbitMQServer, RedisServer

ROLES = ("broker", "files", "api", "client", "w1", "w2", "w3")
WORKERS = ("w1", "w2", "w3")
CONCURRENCY = 2  # worker processes per worker host
ORIGIN_DELAY_S = 0.2
AUDIO_S = 0.5
API_PORT = 8000  # each host is a namespace of its own: no port is taken there
ORIGIN_PORT = 8080

BATCH_A = 200  # w1 and w2 share it; w1 is killed once it has started KILL_AFTER tasks
KILL_AFTER = 20
BATCH_C = 400  # w1 (a new process) and w2, then w3 joins while tasks are queued
# Queued once w3 is ready: its start-up took 20 s on a loaded machine, while w1 and w2 drained
# most of BATCH_C; these keep tasks queued for it to join, whatever its start-up took.
BATCH_C_REFILL = 200
WINDOW = 80  # task starts per throughput measurement
MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic() on arrival: when a worker started the task
    host: str  # role of the source address
    path: str


class Origin:
    """The files host: a short WAV at every /<batch>/<n>.wav, each request logged."""

    def __init__(self, net: Network, delay_s: float) -> None:
        self.requests: list[Request] = []
        self._cond = threading.Condition()
        self._body = _silence_wav(AUDIO_S)
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                request = Request(time.monotonic(), net.role_of(self.client_address[0]), self.path)
                with origin._cond:
                    origin.requests.append(request)
                    origin._cond.notify_all()
                if not self.path.endswith(".wav"):
                    self.send_error(404)
                    return
                time.sleep(delay_s)  # the task's simulated work, see the module docstring
                # A worker killed mid-download leaves a broken pipe here: expected.
                with contextlib.suppress(ConnectionError):
                    self.send_response(200)
                    self.send_header("Content-Type", "audio/wav")
                    self.send_header("Content-Length", str(len(origin._body)))
                    self.end_headers()
                    self.wfile.write(origin._body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64  # the default 5 drops SYNs, each costing a 1 s retry

        host = net["files"]
        self.base_url = f"http://{host.address}:{ORIGIN_PORT}"
        self._httpd = host.run(Server, (host.address, ORIGIN_PORT), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, batch: str, n: int) -> str:
        return f"{self.base_url}/{batch}/{n}.wav"

    def log(self, batch: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.path.startswith(f"/{batch}/")]

    def wait_for(
        self, batch: str, holds: Callable[[list[Request]], bool], *, what: str, timeout: float
    ) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                log = [r for r in self.requests if r.path.startswith(f"/{batch}/")]
                if holds(log):
                    return log
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"files host: not {what} within {timeout:g} s")
                self._cond.wait(remaining)

    def rate(self, batch: str, starts: int, *, timeout: float = 60) -> tuple[float, int]:
        """Task starts per second over the next `starts` starts; and the count at the end."""
        first = len(self.log(batch))
        log = self.wait_for(
            batch,
            lambda log: len(log) > first + starts,
            what=f"{starts} more requests for batch {batch}",
            timeout=timeout,
        )
        return starts / (log[first + starts].at - log[first].at), first + starts


def _silence_wav(seconds: float, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(2 * int(seconds * rate)))
    return buffer.getvalue()


@dataclass
class Cluster:
    net: Network
    origin: Origin
    api: httpx.Client  # only ever used from the client host's threads
    env: dict[str, str]
    workdir: Path
    stack: contextlib.ExitStack
    workers: dict[str, ServiceProcess] = field(default_factory=dict)

    def start_workers(self, *roles: str) -> None:
        """Start a worker on each host (a new process where one ran before); await all."""
        for role in roles:
            process = self.workers.get(role)
            if process is None:
                process = ServiceProcess(
                    "worker",
                    ["worker", "--queues", "audio", "--concurrency", str(CONCURRENCY)],
                    env=_role_env(self.env, self.workdir, role),
                    workdir=self.workdir / role,
                )
                self.workers[role] = process
                self.stack.callback(process.stop)
            self.net[role].run(process.start)
        for role in roles:
            self.workers[role].wait_for_line(" ready.")

    def submit(self, batch: str, count: int, *, first: int = 0) -> list[str]:
        client = self.net["client"]
        futures = [
            client.submit(submit_audio, self.api, self.origin.url(batch, n))
            for n in range(first, first + count)
        ]
        return [f.result() for f in futures]

    def finals(self, ids: list[str]) -> list[dict[str, Any]]:
        client = self.net["client"]
        futures = [client.submit(wait_final, self.api, task_id) for task_id in ids]
        return [f.result() for f in futures]


def _role_env(env: dict[str, str], workdir: Path, role: str) -> dict[str, str]:
    """Per host: its data, metrics and temporary files (a killed task leaves its own)."""
    for sub in ("metrics", "tmp"):
        (workdir / role / sub).mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "ASYNCML_DATA_DIR": str(workdir / role / "data"),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / role / "metrics"),
        "TMPDIR": str(workdir / role / "tmp"),
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Broker and result store, files, API and a client host, torn down even on failure."""
    with contextlib.ExitStack() as stack:
        try:
            net = stack.enter_context(Network(ROLES))
        except NetnsUnavailable as exc:
            pytest.skip(str(exc))
        broker = net["broker"]
        rabbitmq = RabbitMQServer(tmp_path / "rabbitmq", host=broker.address)
        redis_server = RedisServer(tmp_path / "redis", host=broker.address, appendonly=True)
        # Started from a broker thread: in its namespace, and the readiness probes too.
        stack.callback(rabbitmq.stop)
        broker.run(rabbitmq.start)
        stack.callback(redis_server.stop)
        broker.run(redis_server.start)
        origin = Origin(net, ORIGIN_DELAY_S)
        stack.callback(origin.close)

        api_host = net["api"]
        # The API listens on a non-loopback address, so keys are required: one provisioned
        # from a keys file, as a deployment would.
        key, key_record = make_key("multihost", rate="100000/second")  # not a rate test
        (tmp_path / "api-keys").write_text(key_file_line(key_record) + "\n")
        env = service_env(
            data_dir=tmp_path / "data",
            api_port=API_PORT,
            broker_url=rabbitmq.url,
            backend_url=redis_server.url,
            extra={
                "ASYNCML_API_HOST": api_host.address,
                "ASYNCML_API_KEYS_FILE": str(tmp_path / "api-keys"),
                "ASYNCML_FETCH_ALLOW_LOOPBACK": "false",
                "ASYNCML_FETCH_ALLOW_PRIVATE": "true",  # 10.231.0.0/24 is private
            },
        )
        api_process = ServiceProcess(
            "api", ["api"], env=_role_env(env, tmp_path, "api"), workdir=tmp_path / "api"
        )
        stack.callback(api_process.stop)
        api_host.run(api_process.start)
        base_url = f"http://{api_host.address}:{API_PORT}"
        net["client"].run(wait_until_ready, base_url, api_process)
        api = stack.enter_context(
            httpx.Client(
                base_url=base_url,
                timeout=40,
                trust_env=False,  # a proxy from the environment is not on this network
                headers={"Authorization": f"Bearer {key}"},
                limits=httpx.Limits(max_connections=32),
            )
        )
        yield Cluster(net, origin, api, env, tmp_path, stack)


def _per_host(log: list[Request]) -> dict[str, int]:
    counts = Counter(r.host for r in log)
    return {role: counts.get(role, 0) for role in WORKERS} | {
        k: v for k, v in counts.items() if k not in WORKERS
    }


def _runs_by_path(log: list[Request]) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    for r in log:
        runs.setdefault(r.path, []).append(r.host)
    return runs


def _assert_all_succeeded(tasks: list[dict[str, Any]]) -> None:
    failed = [t for t in tasks if t["status"] != "SUCCESS"]
    assert not failed, f"{len(failed)} of {len(tasks)} tasks did not succeed: {failed[:3]}"
    lengths = {t["result"]["audio_length"] for t in tasks}
    assert lengths == {AUDIO_S}, lengths


def test_worker_hosts_share_work_survive_a_lost_host_and_a_third_raises_throughput(
    cluster: Cluster, tmp_path: Path
) -> None:
    origin = cluster.origin
    report: dict[str, Any] = {
        "hosts": {role: host.address for role, host in cluster.net.hosts.items()},
        "worker_concurrency": CONCURRENCY,
        "origin_delay_s": ORIGIN_DELAY_S,
    }

    # (a) and (b): two worker hosts share a batch; w1 dies mid-run, killed outright.
    cluster.start_workers("w1", "w2")
    began = time.monotonic()
    ids = cluster.submit("a", BATCH_A)
    origin.wait_for(
        "a",
        lambda log: sum(r.host == "w1" for r in log) >= KILL_AFTER,
        what=f"{KILL_AFTER} tasks started on w1",
        timeout=60,
    )
    cluster.workers["w1"].kill()
    tasks = cluster.finals(ids)
    seconds_a = time.monotonic() - began
    log_a = origin.log("a")
    per_host_a = _per_host(log_a)
    reruns = {p: hosts for p, hosts in _runs_by_path(log_a).items() if len(hosts) > 1}
    report["batch_a"] = {
        "tasks": BATCH_A,
        "seconds": round(seconds_a, 2),
        "w1_killed_after_starts": KILL_AFTER,
        "runs_per_host": per_host_a,
        "tasks_run_twice": reruns,
    }
    print(f"\nbatch a: {BATCH_A} tasks in {seconds_a:.1f} s; task runs per host {per_host_a}")
    print(f"batch a: run again after w1 was killed: {reruns or 'none'}")

    _assert_all_succeeded(tasks)
    assert len(_runs_by_path(log_a)) == BATCH_A
    assert per_host_a["w1"] >= KILL_AFTER and per_host_a["w2"] > 0, per_host_a
    # At least once: only what w1 had started and not finished runs again, elsewhere.
    assert len(reruns) <= CONCURRENCY, reruns
    assert all(hosts[0] == "w1" and "w1" not in hosts[1:] for hosts in reruns.values()), reruns

    # (c): w1 back as a new process with w2, then w3 joins while the batch is queued.
    cluster.start_workers("w1")
    began = time.monotonic()
    ids = cluster.submit("c", BATCH_C)
    rate_2, _ = origin.rate("c", WINDOW)
    w3_started = time.monotonic()
    cluster.start_workers("w3")
    ids += cluster.submit("c", BATCH_C_REFILL, first=BATCH_C)
    joined = origin.wait_for(
        "c",
        lambda log: any(r.host == "w3" for r in log),
        what="a task started on w3",
        timeout=60,
    )
    w3_first = time.monotonic() - w3_started
    rate_3, started = origin.rate("c", WINDOW)
    tasks = cluster.finals(ids)
    seconds_c = time.monotonic() - began
    log_c = origin.log("c")
    per_host_c = _per_host(log_c)
    reruns_c = {p: h for p, h in _runs_by_path(log_c).items() if len(h) > 1}
    report["batch_c"] = {
        "tasks": len(ids),
        "seconds": round(seconds_c, 2),
        "runs_per_host": per_host_c,
        "tasks_run_twice": reruns_c,
        "w3_first_task_after_s": round(w3_first, 2),
        "started_when_w3_joined": len(joined),
        "started_at_end_of_measuring": started,
        "tasks_per_s_2_hosts": round(rate_2, 2),
        "tasks_per_s_3_hosts": round(rate_3, 2),
        "speedup": round(rate_3 / rate_2, 3),
    }
    report["runs_per_host"] = dict(Counter(per_host_a) + Counter(per_host_c))
    out = tmp_path / "multihost.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"batch c: {len(ids)} tasks in {seconds_c:.1f} s; task runs per host {per_host_c}")
    print(
        f"batch c: {rate_2:.1f} tasks/s on 2 worker hosts, {rate_3:.1f} tasks/s on 3 "
        f"({rate_3 / rate_2:.2f}x); w3 took its first task {w3_first:.1f} s after its start"
    )
    print(f"task runs per host, both batches: {report['runs_per_host']}")
    print(f"figures written to {out}")

    _assert_all_succeeded(tasks)
    assert not reruns_c, f"tasks run twice though no host died: {reruns_c}"
    assert min(per_host_c[role] for role in WORKERS) > 0, per_host_c
    assert len(joined) < len(ids) and started < len(ids), (
        f"the queue ran dry before the 3-host measurement ended ({started} of {len(ids)} "
        "started): raise BATCH_C_REFILL"
    )
    assert rate_3 >= MIN_SPEEDUP * rate_2, (
        f"a third worker host did not raise throughput by {MIN_SPEEDUP}x: "
        f"{rate_2:.1f} -> {rate_3:.1f} tasks/s"
    )
