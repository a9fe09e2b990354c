"""The real processes of a scenario: servers, the service, and a local fixture server.

Servers and service processes come from the integration tests' helpers (tests/integration:
`RedisServer`, `RabbitMQServer`, `ServiceProcess`), so the benchmark starts exactly what the
tests start, on free loopback ports, each in its own session so a stop reaches its tree.
Readiness is awaited on the thing itself (`/readyz`, Celery's " ready." line), never slept on.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _helpers in (ROOT / "tests" / "integration", ROOT / "tests" / "unit"):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))

from euro_pages import results_page  # noqa: E402  # tests/unit, put on sys.path above
from processes import ServiceProcess, service_env, wait_until_ready  # noqa: E402
from procstats import Meter  # noqa: E402
from services import RabbitMQServer, RedisServer, free_ports  # noqa: E402

QUEUES = "audio,euro,debug,webhooks"  # no models queue: ASYNCML_MODELS_BUNDLED=false
WORKER_CONCURRENCY = 2

# Every guard that would shape the load rather than measure the service is lifted: the
# benchmark is the only client and wants the service's own ceiling.
BENCH_SERVICE_ENV = {
    "ASYNCML_RATE_LIMIT": "",
    "ASYNCML_MAX_QUEUE_DEPTH": "0",
    "ASYNCML_MAX_UNFINISHED_PER_KEY": "0",
    "ASYNCML_FETCH_ALLOW_LOOPBACK": "true",
    "ASYNCML_MODELS_BUNDLED": "false",
    "ASYNCML_DEBUG_KINDS": "true",  # debug.echo, the overhead scenario's kind
}


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up early (it had the bytes it wanted) is not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FixtureServer:
    """Results pages at /results/{date} and files of `files_dir` at /files/{name}, on loopback.

    Pages answer every date with the same draw: the parser checks shape, not which draw.
    Files honour a single `Range: bytes=a-b`, as any static file server or object store does;
    the same files at /files-norange/{name} ignore Range (always 200 and the whole file), as
    a server without Range support does: the service's full-download fallback.
    """

    def __init__(self, files_dir: Path | None = None) -> None:
        self.files_dir = files_dir
        self.hits = 0
        page = results_page().encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.hits += 1
                if self.path.startswith("/results/"):
                    self._send(200, page, "text/html; charset=utf-8")
                    return
                path = None
                if self.path.startswith(("/files/", "/files-norange/")) and server.files_dir:
                    path = server.files_dir / Path(self.path).name
                if path is None or not path.is_file():
                    self.send_error(404)
                    return
                # Served the way a static file server is: only the bytes asked for, read from
                # the file at their offset and sent with sendfile(2), so a 53 MB file costs
                # this process (the load generator's) next to nothing.
                total = path.stat().st_size
                first, last, status = 0, total - 1, 200
                wanted = _RANGE.match(self.headers.get("Range", ""))
                ranged = self.path.startswith("/files/")  # /files-norange/ ignores Range
                if wanted and int(wanted[1]) < total and ranged:
                    first = int(wanted[1])
                    last = min(int(wanted[2]) if wanted[2] else total - 1, total - 1)
                    status = 206
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{total}")
                if ranged:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(last - first + 1))
                self.end_headers()
                with (
                    path.open("rb") as file,
                    contextlib.suppress(BrokenPipeError, ConnectionResetError),
                ):
                    self.connection.sendfile(file, first, last - first + 1)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FixtureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Infra:
    """One redis-server and one rabbitmq-server for the whole run, started on first use.

    Started once because RabbitMQ takes seconds to boot; each scenario gets its own Redis
    database and its own queues, so one does not see another's records.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis: RedisServer | None = None
        self.rabbitmq: RabbitMQServer | None = None
        self._next_db = 1

    def ensure(self) -> tuple[RedisServer, RabbitMQServer]:
        if self.redis is None:
            self.redis = RedisServer(self.workdir / "redis").start()
        if self.rabbitmq is None:
            self.rabbitmq = RabbitMQServer(self.workdir / "rabbitmq").start()
        return self.redis, self.rabbitmq

    def redis_url(self) -> str:
        """A fresh database of the shared Redis for one scenario."""
        redis, _ = self.ensure()
        db, self._next_db = self._next_db, self._next_db + 1
        return f"redis://127.0.0.1:{redis.port}/{db}"

    def pids(self) -> dict[str, int]:
        """Root pids of the servers, for the meter (their Popen objects are private there)."""
        pids: dict[str, int] = {}
        for label, server in (("redis", self.redis), ("rabbitmq", self.rabbitmq)):
            process = getattr(server, "_process", None)
            if process is not None:
                pids[label] = process.pid
        return pids

    def close(self) -> None:
        for server in (self.rabbitmq, self.redis):
            if server is not None:
                server.stop()


def _classify_up(argv: list[str]) -> str | None:
    """Split `asyncml up`'s tree: its children are `python -m asyncml api|worker ...`."""
    if "asyncml" in argv:
        role = argv[argv.index("asyncml") + 1 : argv.index("asyncml") + 2]
        if role == ["api"]:
            return "api"
        if role == ["worker"]:
            return "workers"
        if role == ["up"]:
            return "supervisor"
    return None


def pid_of(process: ServiceProcess) -> int:
    if process.proc is None:
        raise RuntimeError(f"{process.name} was never started")
    return process.proc.pid


class Stack:
    """The service under test, as processes; `base_url` and a Meter over its trees."""

    engine: str
    base_url: str

    processes: list[ServiceProcess]

    def meter(self) -> Meter:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise, with its log's tail, if a process of the stack has exited during a run."""
        for process in self.processes:
            if process.proc is None or process.proc.poll() is not None:
                code = None if process.proc is None else process.proc.returncode
                raise RuntimeError(
                    f"{process.name} exited ({code}) during the run; log {process.log_path}:\n"
                    f"{process.tail()}"
                )


class EmbeddedStack(Stack):
    """`asyncml up`: the embedded SQLite broker and store, API and workers supervised."""

    engine = "embedded"

    def __init__(self, workdir: Path, extra_env: Mapping[str, str]) -> None:
        (port,) = free_ports(1)
        env = service_env(
            data_dir=workdir / "data",
            api_port=port,
            extra={**BENCH_SERVICE_ENV, **extra_env},
        )
        self.base_url = f"http://127.0.0.1:{port}"
        self.up = ServiceProcess(
            "up", ["up", "--concurrency", str(WORKER_CONCURRENCY)], env=env, workdir=workdir
        ).start()
        self.processes = [self.up]
        try:
            self.up.wait_for_line(" ready.", timeout=60)
            wait_until_ready(self.base_url, self.up)
        except BaseException:
            self.up.stop()
            raise

    def meter(self) -> Meter:
        return Meter({"service": pid_of(self.up)}, classify=_classify_up)

    def stop(self) -> None:
        self.up.stop()


class BrokerStack(Stack):
    """`asyncml api` and `asyncml worker` on the shared RabbitMQ and a fresh Redis database."""

    engine = "rabbitmq+redis"

    def __init__(
        self,
        workdir: Path,
        infra: Infra,
        extra_env: Mapping[str, str],
        *,
        queues: str = QUEUES,
        worker_args: tuple[str, ...] = ("--concurrency", str(WORKER_CONCURRENCY)),
    ) -> None:
        _, rabbitmq = infra.ensure()
        self.infra = infra
        (port,) = free_ports(1)
        env = service_env(
            data_dir=workdir / "data",
            api_port=port,
            broker_url=rabbitmq.url,
            backend_url=infra.redis_url(),
            extra={**BENCH_SERVICE_ENV, **extra_env},
        )
        self.base_url = f"http://127.0.0.1:{port}"
        self.api = ServiceProcess("api", ["api"], env=env, workdir=workdir).start()
        self.worker = ServiceProcess(
            "worker",
            ["worker", "--queues", queues, *worker_args],
            env=env,
            workdir=workdir,
        ).start()
        self.processes = [self.api, self.worker]
        try:
            self.worker.wait_for_line(" ready.", timeout=60)
            wait_until_ready(self.base_url, self.api)
        except BaseException:
            self.stop()
            raise

    def meter(self) -> Meter:
        return Meter({"api": pid_of(self.api), "workers": pid_of(self.worker), **self.infra.pids()})

    def stop(self) -> None:
        self.worker.stop()
        self.api.stop()


def command_process(
    name: str, argv: list[str], *, env: Mapping[str, str], workdir: Path
) -> ServiceProcess:
    """A ServiceProcess running `argv` instead of `python -m asyncml ...` (ceiling servers)."""
    process = ServiceProcess(name, [], env=env, workdir=workdir)
    process.argv = argv
    return process.start()


@contextlib.contextmanager
def started(stack: Stack) -> Iterator[Stack]:
    try:
        yield stack
    finally:
        stack.stop()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCML_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env
