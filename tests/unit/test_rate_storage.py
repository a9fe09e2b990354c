"""The rate limit's SQLite storage: the library's own storage's semantics, one count per file.

Rates are per day so that no test straddles a window's edge, where the sliding window
counter weighs the previous window and a count would shift under the test.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from asyncml.api.limits import RateGate
from asyncml.api.rate_storage import SqliteRateStorage
from asyncml.auth import Caller
from asyncml.errors import RateLimited
from asyncml.records import ApiKey, utcnow
from asyncml.settings import Settings

pytestmark = pytest.mark.anyio

THREE_A_DAY = parse("3/day")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MemoryStorage | SqliteRateStorage]:
    """The library's own in-memory storage, then ours: each test below holds for both."""
    if request.param == "memory":
        yield MemoryStorage()
        return
    sqlite = SqliteRateStorage(tmp_path / "rates.sqlite3")
    yield sqlite
    sqlite.close()


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[SqliteRateStorage, SqliteRateStorage]]:
    """Two storages on one file, as two API processes have."""
    path = tmp_path / "rates.sqlite3"
    first, second = SqliteRateStorage(path), SqliteRateStorage(path)
    yield first, second
    first.close()
    second.close()


def _caller(rate: str) -> Caller:
    return Caller(key=ApiKey(name="tiny", digest="ab" * 32, created_at=utcnow(), rate=rate))


@pytest.fixture
def gates(settings: Settings) -> Iterator[tuple[RateGate, RateGate]]:
    """Two rate gates built from one embedded Settings, as two API processes build theirs."""
    built = RateGate(settings), RateGate(settings)
    yield built
    for gate in built:
        storage = gate._limiter.storage
        assert isinstance(storage, SqliteRateStorage)
        storage.close()


# --- as the library's own storage ----------------------------------------------------------


async def test_counts_start_at_the_first_increment_and_add_up(
    storage: MemoryStorage | SqliteRateStorage,
) -> None:
    assert await storage.incr("k", 60) == 1
    assert await storage.incr("k", 60, amount=2) == 3
    assert await storage.get("k") == 3


async def test_an_absent_counter_reads_zero_and_expires_now(
    storage: MemoryStorage | SqliteRateStorage,
) -> None:
    before = time.time()
    assert await storage.get("nothing") == 0
    assert before <= await storage.get_expiry("nothing") <= time.time()


async def test_the_first_increment_sets_the_expiry_and_later_ones_keep_it(
    storage: MemoryStorage | SqliteRateStorage,
) -> None:
    before = time.time()
    await storage.incr("k", 60)
    expires_at = await storage.get_expiry("k")
    assert before + 60 <= expires_at <= time.time() + 60
    await storage.incr("k", 3600)
    assert await storage.get_expiry("k") == expires_at


async def test_an_expired_counter_reads_as_absent_and_starts_again(
    storage: MemoryStorage | SqliteRateStorage,
) -> None:
    await storage.incr("k", -1, amount=5)  # its expiry is already past: nothing to wait for
    assert await storage.get("k") == 0
    assert await storage.incr("k", 60) == 1
    assert await storage.get_expiry("k") > time.time()


async def test_clear_forgets_one_counter_only(storage: MemoryStorage | SqliteRateStorage) -> None:
    await storage.incr("gone", 60)
    await storage.incr("kept", 60)
    await storage.clear("gone")
    assert (await storage.get("gone"), await storage.get("kept")) == (0, 1)


async def test_reset_forgets_every_counter_and_says_how_many(
    storage: MemoryStorage | SqliteRateStorage,
) -> None:
    await storage.incr("a", 60)
    await storage.incr("b", 60, amount=4)
    assert await storage.reset() == 2
    assert (await storage.get("a"), await storage.get("b")) == (0, 0)


async def test_check_says_healthy(storage: MemoryStorage | SqliteRateStorage) -> None:
    assert await storage.check() is True


async def test_sliding_window_allows_the_rate_then_refuses(
    storage: MemoryStorage | SqliteRateStorage,
) -> None:
    limiter = SlidingWindowCounterRateLimiter(storage)
    assert [await limiter.hit(THREE_A_DAY, "key") for _ in range(4)] == [True] * 3 + [False]
    stats = await limiter.get_window_stats(THREE_A_DAY, "key")
    assert stats.remaining == 0
    assert stats.reset_time > time.time()
    assert await limiter.hit(THREE_A_DAY, "another key") is True


async def test_a_cost_above_the_rate_is_refused_without_counting(
    storage: MemoryStorage | SqliteRateStorage,
) -> None:
    limiter = SlidingWindowCounterRateLimiter(storage)
    assert await limiter.hit(THREE_A_DAY, "key", cost=4) is False
    assert await limiter.hit(THREE_A_DAY, "key", cost=3) is True


async def test_clearing_a_limit_allows_it_again(
    storage: MemoryStorage | SqliteRateStorage,
) -> None:
    limiter = SlidingWindowCounterRateLimiter(storage)
    for _ in range(3):
        await limiter.hit(THREE_A_DAY, "key")
    await limiter.clear(THREE_A_DAY, "key")
    assert (await limiter.get_window_stats(THREE_A_DAY, "key")).remaining == 3
    assert await limiter.hit(THREE_A_DAY, "key") is True


# --- one count per file ----------------------------------------------------------------------


async def test_two_storages_on_one_file_share_one_count(
    two: tuple[SqliteRateStorage, SqliteRateStorage],
) -> None:
    limiters = [SlidingWindowCounterRateLimiter(s) for s in two]
    hits = [await limiters[i % 2].hit(THREE_A_DAY, "key") for i in range(4)]
    assert hits == [True, True, True, False]


async def test_two_storages_on_one_file_agree_on_what_remains(
    two: tuple[SqliteRateStorage, SqliteRateStorage],
) -> None:
    first, second = (SlidingWindowCounterRateLimiter(s) for s in two)
    await first.hit(THREE_A_DAY, "key")
    await first.hit(THREE_A_DAY, "key")
    seen = [await limiter.get_window_stats(THREE_A_DAY, "key") for limiter in (first, second)]
    assert [stats.remaining for stats in seen] == [1, 1]


async def test_concurrent_hits_through_two_storages_take_exactly_the_rate(
    two: tuple[SqliteRateStorage, SqliteRateStorage],
) -> None:
    item = parse("10/day")
    limiters = [SlidingWindowCounterRateLimiter(s) for s in two]
    allowed: list[bool] = []

    async def hit(limiter: SlidingWindowCounterRateLimiter) -> None:
        allowed.append(await limiter.hit(item, "key"))

    async with anyio.create_task_group() as group:
        for i in range(30):
            group.start_soon(hit, limiters[i % 2])
    assert allowed.count(True) == 10
    assert (await limiters[0].get_window_stats(item, "key")).remaining == 0


async def test_expired_counters_are_deleted_from_the_file(
    two: tuple[SqliteRateStorage, SqliteRateStorage],
) -> None:
    first, second = two
    await first.incr("expired", -1)
    await first.incr("live", 60)
    await second.incr("other", 60)  # a storage's first write drops what has expired
    with closing(sqlite3.connect(first.path)) as conn:
        keys = {key for (key,) in conn.execute("SELECT key FROM counters")}
    assert keys == {"live", "other"}


async def test_a_file_that_cannot_be_opened_is_unhealthy(tmp_path: Path) -> None:
    storage = SqliteRateStorage(tmp_path / "no such folder" / "rates.sqlite3")
    assert await storage.check() is False
    with pytest.raises(sqlite3.OperationalError):
        await storage.incr("k", 60)


# --- the rate gate ---------------------------------------------------------------------------


async def test_rate_gates_of_one_data_folder_share_each_keys_count(
    gates: tuple[RateGate, RateGate], settings: Settings
) -> None:
    caller = _caller("3/day")
    headers = [await gates[i % 2].check(caller) for i in range(3)]
    assert [h["RateLimit-Remaining"] for h in headers] == ["2", "1", "0"]
    with pytest.raises(RateLimited):
        await gates[1].check(caller)
    assert (settings.data_dir / "rates.sqlite3").is_file()


async def test_rate_gate_lets_requests_through_when_its_file_cannot_be_opened(
    gates: tuple[RateGate, RateGate], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.rmtree(settings.data_dir)  # before the first request opens the file
    with caplog.at_level(logging.ERROR):
        assert await gates[0].check(_caller("1/day")) == {}
        assert await gates[0].check(_caller("1/day")) == {}
    assert "letting the request through" in caplog.text
