"""The real processes of a scenario: servers, the service, and the ceilings' servers.

Servers and service processes come from the integration tests' helpers (tests/integration:
`RedisServer`, `RabbitMQServer`, `ServiceProcess`), so the benchmark starts exactly what the
tests start, on free loopback ports, each in its own session so a stop reaches its tree.
Readiness is awaited on the thing itself (`/readyz`, Celery's " ready." line), never slept on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# First on the path, so a bench module must not share a name with a test helper module.
for _helpers in (ROOT / "tests" / "integration", ROOT / "tests" / "unit"):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))

import redis as redis_client  # noqa: E402
from processes import ServiceProcess, service_env, wait_until_ready  # noqa: E402  # tests/integration, put on sys.path above
from procstats import Meter, children_map, cmdline, tree  # noqa: E402
from services import RabbitMQServer, RedisServer, free_ports  # noqa: E402

QUEUES = "audio,euro,debug,webhooks"  # no models queue: ASYNCML_MODELS_BUNDLED=false
WORKER_CONCURRENCY = 2
REDIS_DATABASES = 16  # redis-server's default `databases`

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
        """A fresh database of the shared Redis for one stack: 1 to 15 in turn (Redis has
        16), emptied before it is handed out again (a run of every scenario starts more than
        15 stacks; the 16th asked for database 16 and Redis refused it)."""
        redis, _ = self.ensure()
        db, self._next_db = self._next_db, self._next_db % (REDIS_DATABASES - 1) + 1
        with redis_client.Redis(host="127.0.0.1", port=redis.port, db=db) as client:
            client.flushdb()
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

    def pool_pids(self) -> list[int]:
        """The worker processes that run tasks (the prefork pool's children, or the worker
        itself when it has none): the events scenario freezes them to hold tasks STARTED."""
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
        port, env = bench_service_env(workdir, extra_env)
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

    def pool_pids(self) -> list[int]:
        children = children_map()
        below = tree(pid_of(self.up), children)
        roots = [p for p in below if _classify_up(cmdline(p)) == "workers"]
        # A pool child has its worker's argv too: it is its own "pool"; dict keeps one of each.
        return list(dict.fromkeys(p for root in roots for p in _pool_of(root, children)))

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
        models_worker: bool = False,
    ) -> None:
        """`models_worker`: also `asyncml worker --queues models` (its thread pool, where
        predictions batch), as docs/scaling.md deploys model kinds beside the others."""
        self.infra = infra
        port, env = bench_service_env(workdir, extra_env, infra)
        self.base_url = f"http://127.0.0.1:{port}"
        self.api = ServiceProcess("api", ["api"], env=env, workdir=workdir).start()
        self.worker = worker_process(
            "worker", queues, worker_args, env=env, workdir=workdir
        ).start()
        self.workers = [self.worker]
        if models_worker:
            models = worker_process("models", "models", (), env=env, workdir=workdir)
            self.workers.append(models.start())
        self.processes = [self.api, *self.workers]
        try:
            for worker in self.workers:
                worker.wait_for_line(" ready.", timeout=60)
            wait_until_ready(self.base_url, self.api)
        except BaseException:
            self.stop()
            raise

    def meter(self) -> Meter:
        workers = {f"workers{'' if i == 0 else i}": pid_of(w) for i, w in enumerate(self.workers)}
        return Meter({"api": pid_of(self.api), **workers, **self.infra.pids()})

    def pool_pids(self) -> list[int]:
        return _pool_of(pid_of(self.worker), children_map())

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.api.stop()


class BareStack(Stack):
    """`ceiling_app.py` on uvicorn, one process: the HTTP ceiling, no broker and no store."""

    engine = "bare-uvicorn"

    def __init__(self, workdir: Path) -> None:
        (port,) = free_ports(1)
        self.base_url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "uvicorn", "ceiling_app:app", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
        env = clean_env(PYTHONPATH=str(BENCH_DIR))
        self.process = command_process("bare-uvicorn", argv, env=env, workdir=workdir)
        self.processes = [self.process]
        try:
            wait_until_ready(self.base_url, self.process)
        except BaseException:
            self.process.stop()
            raise

    def meter(self) -> Meter:
        return Meter({"api": pid_of(self.process)})

    def stop(self) -> None:
        self.process.stop()


def _pool_of(worker: int, children: dict[int, list[int]]) -> list[int]:
    below = tree(worker, children)[1:]
    return below or [worker]


def bench_service_env(
    workdir: Path, extra_env: Mapping[str, str], infra: Infra | None = None
) -> tuple[int, dict[str, str]]:
    """A free API port and the environment of one service under test.

    Its own data folder, the bench's guards lifted (BENCH_SERVICE_ENV), then `extra_env`;
    on `infra`'s RabbitMQ and a fresh database of its Redis, or embedded without `infra`.
    """
    broker_url = backend_url = None
    if infra is not None:
        _, rabbitmq = infra.ensure()
        broker_url, backend_url = rabbitmq.url, infra.redis_url()
    (port,) = free_ports(1)
    env = service_env(
        data_dir=workdir / "data",
        api_port=port,
        broker_url=broker_url,
        backend_url=backend_url,
        extra={**BENCH_SERVICE_ENV, **extra_env},
        api_processes=None,  # the service's default, as a user runs it
    )
    return port, env


def worker_process(
    name: str, queues: str, args: Sequence[str], *, env: Mapping[str, str], workdir: Path
) -> ServiceProcess:
    """`asyncml worker --queues ...`, not started yet (the footprint scenario times its start)."""
    return ServiceProcess(name, ["worker", "--queues", queues, *args], env=env, workdir=workdir)


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
