"""Fixtures for integration tests: real servers, started once per session.

Session servers are shared: tests use their own queue names and keys and never stop
them. A test that stops or restarts a server takes a private_* one instead. A module whose
stack needs a broker to itself takes a vhost of the session node (rabbitmq_vhosts), not a
node of its own: an Erlang node takes seconds of CPU to boot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .fixture_server import FixtureServer
from .processes import ServiceProcess, service_env, wait_until_ready
from .services import RabbitMQServer, RedisServer, ServiceError, free_ports

WEBHOOK_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtb2YtdGhlLWludGVncmF0aW9uLXN0YWNr"  # test only
_HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "restart: stops and starts a private server; slow, deselect with -m 'not restart'",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


# --- session servers ---------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


class VhostPool:
    """Hands out each of a node's vhosts (but "/") once: the taker's queues are its own."""

    def __init__(self, server: RabbitMQServer) -> None:
        self.server = server
        self._unused = [vhost for vhost in server.vhosts if vhost != "/"]

    def take(self) -> str:
        if not self._unused:
            raise ServiceError(f"every vhost of {self.server!r} is taken: create more")
        return self._unused.pop(0)

    def url(self) -> str:
        """The URL of a vhost nobody used before."""
        return self.server.url_for(self.take())


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    vhosts = [f"stack-{n}" for n in range(8)]
    with RabbitMQServer(tmp_path_factory.mktemp("rabbitmq"), vhosts=vhosts) as server:
        yield server


@pytest.fixture(scope="session")
def rabbitmq_vhosts(rabbitmq_server: RabbitMQServer) -> VhostPool:
    """Vhosts of the session node, for a module's stack that must see no other queue."""
    return VhostPool(rabbitmq_server)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_server: RabbitMQServer) -> str:
    return rabbitmq_server.url


# --- private servers, for tests that stop or restart them --------------------------


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def restartable_rabbitmq(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RabbitMQServer, VhostPool]]:
    vhosts = [f"test-{n}" for n in range(16)]
    workdir = tmp_path_factory.mktemp("rabbitmq-restartable")
    with RabbitMQServer(workdir, vhosts=vhosts) as server:
        yield server, VhostPool(server)


@pytest.fixture
def private_rabbitmq_server(
    restartable_rabbitmq: tuple[RabbitMQServer, VhostPool],
) -> Iterator[RabbitMQServer]:
    """A node this test may pause, stop and restart, its url on a vhost no test used before.

    The tests that do so take turns on one node, each on a fresh vhost, rather than boot
    one each (seconds of Erlang start-up every time); it runs again after each test.
    """
    server, vhosts = restartable_rabbitmq
    server.vhost = vhosts.take()
    try:
        yield server
    finally:
        server.vhost = "/"
        if not server.running:
            server.start()


# --- fixture files and the service's own processes ----------------------------------


def _write_tone(path: Path, seconds: float, fmt: str, rate: int = 16_000) -> None:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, tone, rate, format=fmt)


@pytest.fixture(scope="session")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixtureServer]:
    root = tmp_path_factory.mktemp("files")
    _write_tone(root / "tone-5s.wav", 5, "WAV")
    _write_tone(root / "victim.wav", 5, "WAV")
    _write_tone(root / "tone-30s.wav", 30, "WAV")
    _write_tone(root / "tone-30s.flac", 30, "FLAC")
    _write_tone(root / "tone-30s.mp3", 30, "MP3")
    (root / "notes.wav").write_text("these are meeting notes, not audio\n" * 100)
    with FixtureServer(root).running() as server:
        yield server


@pytest.fixture
def files(files_server: FixtureServer) -> Iterator[FixtureServer]:
    """The session's file server with its gate closed; opened again after the test."""
    files_server.reset()
    yield files_server
    files_server.gate_open.set()


@pytest.fixture(scope="session")
def euro_pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixtureServer]:
    """The euro.results source: a test writes ``results/<DD-MM-YYYY>``; other dates 404."""
    root = tmp_path_factory.mktemp("euro")
    (root / "results").mkdir()
    with FixtureServer(root).running() as server:
        yield server


@pytest.fixture(scope="session")
def stack_env(
    tmp_path_factory: pytest.TempPathFactory,
    rabbitmq_url: str,
    redis_url: str,
    euro_pages: FixtureServer,
) -> tuple[dict[str, str], str, Path]:
    (port,) = free_ports(1)
    workdir = tmp_path_factory.mktemp("stack")
    env = service_env(
        data_dir=workdir / "data",
        api_port=port,
        broker_url=rabbitmq_url,
        backend_url=redis_url,
        extra={
            "ASYNCML_EURO_RESULTS_URL": euro_pages.url("results/{date}"),
            "ASYNCML_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ASYNCML_WEBHOOK_ALLOW_LOOPBACK": "true",
            "ASYNCML_WEBHOOK_RETRY_BASE_S": "0.2",
            "ASYNCML_WEBHOOK_TIMEOUT_S": "1.5",
            "ASYNCML_WEBHOOK_MAX_ATTEMPTS": "3",
            "ASYNCML_LOG_FORMAT": "json",
        },
    )
    return env, f"http://127.0.0.1:{port}", workdir


@pytest.fixture(scope="session")
def stack_processes(
    stack_env: tuple[dict[str, str], str, Path],
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """The session API and its worker, started together and then awaited: each spends
    seconds importing, which the two cores do side by side."""
    env, base_url, workdir = stack_env
    api = ServiceProcess("api", ["api"], env=env, workdir=workdir)
    worker = ServiceProcess(
        "worker",
        ["worker", "--queues", "audio,euro,webhooks", "--concurrency", "1"],
        env=env,
        workdir=workdir,
    )
    try:
        api.start()
        worker.start()
        wait_until_ready(base_url, api)
        worker.wait_for_line(" ready.")
        yield api, worker
    finally:
        worker.stop()
        api.stop()


@pytest.fixture(scope="session")
def api_process(stack_processes: tuple[ServiceProcess, ServiceProcess]) -> ServiceProcess:
    return stack_processes[0]


@pytest.fixture(scope="session")
def worker_process(stack_processes: tuple[ServiceProcess, ServiceProcess]) -> ServiceProcess:
    """One worker with one slot, so queue order is run order in the tests that need it."""
    return stack_processes[1]


@pytest.fixture(scope="session")
def models_worker_process(
    stack_env: tuple[dict[str, str], str, Path],
) -> Iterator[ServiceProcess]:
    """The models queue's worker: a pool of threads in one process, which batches."""
    env, _, workdir = stack_env
    process = ServiceProcess(
        "worker-models", ["worker", "--queues", "models"], env=env, workdir=workdir
    ).start()
    try:
        process.wait_for_line(" ready.")
        yield process
    finally:
        process.stop()


@pytest.fixture
def models_worker(models_worker_process: ServiceProcess) -> ServiceProcess:
    assert models_worker_process.proc is not None
    if models_worker_process.proc.poll() is not None:
        models_worker_process.start()
        models_worker_process.wait_for_line(" ready.")
    return models_worker_process


@pytest.fixture
def worker(worker_process: ServiceProcess) -> ServiceProcess:
    """The session worker, restarted first if an earlier test killed it."""
    assert worker_process.proc is not None
    if worker_process.proc.poll() is not None:
        worker_process.start()
        worker_process.wait_for_line(" ready.")
    return worker_process


@pytest.fixture
def api(
    stack_env: tuple[dict[str, str], str, Path],
    api_process: ServiceProcess,
    worker: ServiceProcess,
) -> Iterator[httpx.Client]:
    _, base_url, _ = stack_env
    with httpx.Client(base_url=base_url, timeout=40) as client:
        yield client
