"""A store that would lose accepted tasks in a crash is named, not trusted (issue 18, #5).

Redis without its append-only file keeps only snapshots: killed, it forgets every task
accepted since the last one. ``ASYNCML_STORE_DURABILITY`` decides what the API does about
it: ``check`` keeps /readyz at 503 (and logs an error), ``warn`` logs and stays ready,
``off`` does not look. Real Redis, RabbitMQ and API processes throughout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from asyncml.settings import Settings
from asyncml.store import StoreDurability, check_durability_at_start
from asyncml.store.redis import AsyncRedisTaskStore, RedisTaskStore
from asyncml.store.sqlite import AsyncSqliteTaskStore, SqliteTaskStore

from .processes import Launcher, ProcessError, ServiceProcess, service_env
from .services import RedisServer, free_ports

TTL = 3600
READY = {"status": "ready", "broker": "ok", "result_store": "ok"}


@pytest.fixture
def redis_without_aof(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis-no-aof", appendonly=False) as server:
        yield server


class Api:
    """An ``asyncml api`` process against the session RabbitMQ and a given Redis."""

    def __init__(self, tmp_path: Path, rabbitmq_url: str, redis_url: str, mode: str) -> None:
        (port,) = free_ports(1)
        env = service_env(
            data_dir=tmp_path / "data",
            api_port=port,
            broker_url=rabbitmq_url,
            backend_url=redis_url,
            extra={"ASYNCML_STORE_DURABILITY": mode},
        )
        self.base_url = f"http://127.0.0.1:{port}"
        self._launch = Launcher(env, tmp_path)
        self.process: ServiceProcess = self._launch("api", ["api"])

    def answering(self, timeout: float = 60.0) -> httpx.Response:
        """The first answer of /readyz, whatever its status: unlike ``wait_until_ready``,
        a 503 is an answer here."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.proc is not None and self.process.proc.poll() is not None:
                    raise ProcessError(f"api exited early:\n{self.process.tail()}")
                try:
                    return client.get("/readyz")
                except httpx.TransportError:
                    time.sleep(0.1)  # start-up probe interval, bounded by the deadline
        raise ProcessError(f"{self.base_url}/readyz never answered:\n{self.process.tail()}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=10)

    def stop(self) -> None:
        self._launch.stop_all()


@pytest.fixture
def api_for(tmp_path: Path, rabbitmq_url: str) -> Iterator[Callable[[str, str], Api]]:
    """Start an API on a Redis under a durability mode; stopped after the test."""
    started: list[Api] = []

    def start(redis_url: str, mode: str) -> Api:
        api = Api(tmp_path, rabbitmq_url, redis_url, mode)
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def test_check_keeps_readyz_503_on_redis_without_append_only_file(
    redis_without_aof: RedisServer, api_for: Callable[[str, str], Api]
) -> None:
    api = api_for(redis_without_aof.url, "check")
    response = api.answering()
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["broker"] == "ok" and body["result_store"] == "ok"
    problem = body["store_durability"]
    assert problem["durable"] is False
    assert problem["settings"]["appendonly"] == "no"
    assert "appendonly no" in problem["risk"]
    assert "CONFIG SET appendonly yes" in problem["fix"]
    assert "redis.conf" in problem["fix"]


def test_check_logs_an_error_naming_the_fix_at_start(
    redis_without_aof: RedisServer, api_for: Callable[[str, str], Api]
) -> None:
    api = api_for(redis_without_aof.url, "check")
    api.process.wait_for_line("CONFIG SET appendonly yes")
    line = next(x for x in api.process.tail(200).splitlines() if "appendonly yes" in x)
    assert "ERROR" in line


def test_check_readyz_turns_200_once_appendonly_is_set_live(
    redis_without_aof: RedisServer, api_for: Callable[[str, str], Api]
) -> None:
    api = api_for(redis_without_aof.url, "check")
    assert api.answering().status_code == 503
    with redis_without_aof.client() as client:
        client.config_set("appendonly", "yes")
    response = api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == READY


def test_warn_stays_ready_and_logs_a_warning(
    redis_without_aof: RedisServer, api_for: Callable[[str, str], Api]
) -> None:
    api = api_for(redis_without_aof.url, "warn")
    response = api.answering()
    assert response.status_code == 200, response.text
    assert response.json()["store_durability"]["durable"] is False
    api.process.wait_for_line("CONFIG SET appendonly yes")
    line = next(x for x in api.process.tail(200).splitlines() if "appendonly yes" in x)
    assert "WARNING" in line


def test_off_does_not_look(
    redis_without_aof: RedisServer, api_for: Callable[[str, str], Api]
) -> None:
    api = api_for(redis_without_aof.url, "off")
    response = api.answering()
    assert response.status_code == 200, response.text
    assert response.json() == READY
    samples = [x for x in api.get("/metrics").text.splitlines() if not x.startswith("#")]
    assert not [x for x in samples if x.startswith("asyncml_store_durable")]


def test_check_is_ready_on_redis_with_append_only_file(
    redis_url: str, api_for: Callable[[str, str], Api]
) -> None:
    api = api_for(redis_url, "check")
    response = api.answering()
    assert response.status_code == 200, response.text
    assert response.json() == READY


@pytest.mark.parametrize(("aof", "value"), [(False, "0.0"), (True, "1.0")])
def test_metric_says_whether_the_store_is_durable(
    aof: bool, value: str, tmp_path: Path, api_for: Callable[[str, str], Api]
) -> None:
    with RedisServer(tmp_path / "redis", appendonly=aof) as redis_server:
        api = api_for(redis_server.url, "warn")
        assert api.answering().status_code == 200
        lines = api.get("/metrics").text.splitlines()
    assert f"asyncml_store_durable {value}" in lines


# --- the stores' own report ---------------------------------------------------------


def test_redis_with_append_only_file_reports_durable(redis_url: str) -> None:
    store = RedisTaskStore(redis_url, ttl_s=TTL)
    try:
        report = store.durability()
    finally:
        store.close()
    assert report.durable is True
    assert report.settings == {"appendonly": "yes", "appendfsync": "everysec"}
    assert report.fix is None


def test_redis_without_append_only_file_reports_not_durable_to_the_api(
    redis_without_aof: RedisServer,
) -> None:
    async def read() -> StoreDurability:
        store = AsyncRedisTaskStore(redis_without_aof.url, ttl_s=TTL)
        try:
            return await store.durability()
        finally:
            await store.close()

    report = asyncio.run(read())
    assert report.durable is False
    assert report.settings["appendonly"] == "no"


def test_redis_that_refuses_config_reports_unknown(private_redis_server: RedisServer) -> None:
    """As a managed Redis does: here an ACL takes CONFIG from the default user."""
    with private_redis_server.client() as client:
        client.execute_command("ACL", "SETUSER", "default", "-config")
    store = RedisTaskStore(private_redis_server.url, ttl_s=TTL)
    try:
        report = store.durability()
    finally:
        store.close()
    assert report.durable is None
    assert "CONFIG" in report.risk


def test_sqlite_reports_durable_by_construction(tmp_path: Path) -> None:
    sync = SqliteTaskStore(tmp_path / "tasks.sqlite3", ttl_s=TTL)
    try:
        report = asyncio.run(AsyncSqliteTaskStore(sync).durability())
    finally:
        sync.close()
    assert report.durable is True
    assert report.settings == {"journal_mode": "wal", "synchronous": "FULL"}


def test_start_up_check_of_a_process_without_a_store_logs_an_error(
    redis_without_aof: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a worker's main process calls: it opens the store, reads, logs, closes."""
    settings = Settings(_env_file=None, data_dir=tmp_path, result_backend_url=redis_without_aof.url)
    log = logging.getLogger("test.worker")
    with caplog.at_level(logging.INFO, logger=log.name):
        check_durability_at_start(settings, log)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "CONFIG SET appendonly yes" in record.getMessage()
