"""Fetching a results page: user agent, rate limit, retries, Retry-After, timeouts, deadline.

Against a scripted server on 127.0.0.1. Backoff waits are recorded by an injected ``sleep``
instead of being taken, and the slot schedule is a stub that never asks to wait, so the
recorded waits are exactly the backoff; the rate-limit tests use the real SQLite store.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from asyncml.errors import FetchBlocked, FetchError, FetchTooLarge
from asyncml.fetch import Fetched, Fetcher
from asyncml.settings import Settings
from asyncml.store.sqlite import SqliteTaskStore
from asyncml.tasks._euro_settings import EuroSettings
from asyncml.tasks._euro_source import (
    SlotSchedule,
    SourcePolicy,
    fetch_page,
    retry_after_seconds,
)
from asyncml.tasks.euro import EuroDrawNotFound

from .euro_pages import EuroSource, Reply, results_page

DATE = "10-05-2024"
PAGE = results_page()


class NoWait:
    """A slot schedule that never asks to wait, and counts the slots booked."""

    def __init__(self) -> None:
        self.booked: list[tuple[str, float]] = []

    def reserve_slot(self, key: str, interval_s: float) -> float:
        self.booked.append((key, interval_s))
        return 0.0


@pytest.fixture
def settings(tmp_path: Path, source: EuroSource) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        fetch_allow_loopback=True,
        euro=EuroSettings(
            results_url=source.url_template,
            rate_per_s=100,
            retry_base_s=0.01,
            retry_max_s=10,
            connect_timeout_s=1,
            read_timeout_s=0.3,
        ),
    )


def with_euro(settings: Settings, **changes: object) -> Settings:
    """``settings`` with some of its euro group changed."""
    return settings.model_copy(update={"euro": settings.euro.model_copy(update=changes)})


@pytest.fixture
def waits() -> list[float]:
    return []


def fetch(
    settings: Settings,
    waits: list[float],
    *,
    schedule: SlotSchedule | None = None,
    within_s: float = 30.0,
    date: str = DATE,
) -> Fetched:
    return fetch_page(
        settings.euro.results_url.replace("{date}", date),
        fetcher=Fetcher.from_settings(settings),
        schedule=schedule or NoWait(),
        policy=SourcePolicy.from_settings(settings),
        deadline=time.monotonic() + within_s,
        sleep=waits.append,
    )


# --- politeness ------------------------------------------------------------------------


def test_page_is_fetched_with_a_user_agent_naming_asyncml_and_its_version(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    source.serve(DATE, Reply(body=PAGE))
    page = fetch(settings, waits)
    assert page.status_code == 200
    assert b"ballsDrawn" in page.content
    assert source.hits[0].headers["User-Agent"] == "asyncml/0.1.0"


def test_user_agent_carries_the_contact_setting(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    source.serve(DATE, Reply(body=PAGE))
    with_contact = settings.model_copy(update={"scraper_contact": "mailto:ops@example.org"})
    fetch(with_contact, waits)
    assert source.hits[0].headers["User-Agent"] == "asyncml/0.1.0 (+mailto:ops@example.org)"


def test_every_request_books_a_slot_for_the_source_host(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    source.serve(DATE, Reply(500), Reply(body=PAGE))
    schedule = NoWait()
    fetch(settings, waits, schedule=schedule)
    assert schedule.booked == [("euro.results:127.0.0.1", 0.01)] * 2


def test_second_request_waits_for_the_next_slot_of_the_shared_schedule(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    source.serve(DATE, Reply(body=PAGE))
    one_per_s = with_euro(settings, rate_per_s=1.0)
    store = SqliteTaskStore(settings.store_path(), ttl_s=60)
    try:
        fetch(one_per_s, waits, schedule=store)
        assert waits == []
        fetch(one_per_s, waits, schedule=store)
    finally:
        store.close()
    assert len(waits) == 1
    assert 0.5 < waits[0] <= 1.0


def test_rate_limit_that_leaves_no_time_fails_before_any_request(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    source.serve(DATE, Reply(body=PAGE))
    slow_rate = with_euro(settings, rate_per_s=0.1)  # one per 10 s
    store = SqliteTaskStore(settings.store_path(), ttl_s=60)
    try:
        fetch(slow_rate, waits, schedule=store, within_s=5)
        with pytest.raises(FetchError, match=r"rate limit .* leaves no time"):
            fetch(slow_rate, waits, schedule=store, within_s=5)
    finally:
        store.close()
    assert source.count(f"/results/{DATE}") == 1


def test_retry_the_rate_limit_leaves_no_time_for_fails_with_the_last_cause(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(503), Reply(body=PAGE))
    slow_rate = with_euro(settings, rate_per_s=0.1)  # one per 10 s
    store = SqliteTaskStore(settings.store_path(), ttl_s=60)
    try:
        with pytest.raises(FetchError, match=r"HTTP 503 from .*; then the request rate limit"):
            fetch(slow_rate, waits, schedule=store, within_s=5)
    finally:
        store.close()
    assert source.count(path) == 1


# --- retries ---------------------------------------------------------------------------


def test_500_twice_then_200_succeeds_on_the_third_attempt(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(500), Reply(500), Reply(body=PAGE))
    page = fetch(settings, waits)
    assert page.status_code == 200
    assert source.count(path) == 3


def test_backoff_doubles_with_jitter(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    source.serve(DATE, Reply(503), Reply(502), Reply(body=PAGE))
    fetch(settings, waits)
    first, second = waits
    assert 0.01 <= first <= 0.02  # base, plus up to base of jitter
    assert 0.02 <= second <= 0.03  # doubled, plus jitter


def test_5xx_every_time_gives_up_after_max_attempts_with_the_last_cause(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(502), Reply(503))
    with pytest.raises(FetchError, match=r"HTTP 503 from .*gave up after 3 attempts") as info:
        fetch(settings, waits)
    assert type(info.value) is FetchError
    assert source.count(path) == 3


def test_max_attempts_setting_bounds_the_requests(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(500))
    with pytest.raises(FetchError, match="gave up after 5 attempts"):
        fetch(with_euro(settings, max_attempts=5), waits)
    assert source.count(path) == 5


def test_429_waits_as_long_as_retry_after_says(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(429, headers={"Retry-After": "7"}), Reply(body=PAGE))
    assert fetch(settings, waits).status_code == 200
    assert waits == [7.0]
    assert source.count(path) == 2


def test_retry_after_longer_than_the_cap_fails_at_once(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(429, headers={"Retry-After": "3600"}), Reply(body=PAGE))
    with pytest.raises(FetchError, match=r"HTTP 429 .*retry after 3600 s.*not retried"):
        fetch(settings, waits)
    assert source.count(path) == 1
    assert waits == []


def test_retry_that_cannot_finish_before_the_deadline_is_not_started(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(503, headers={"Retry-After": "5"}), Reply(body=PAGE))
    with pytest.raises(FetchError, match=r"HTTP 503 .*gave up after 1 attempt; too little time"):
        fetch(settings, waits, within_s=4)
    assert source.count(path) == 1


def test_404_fails_at_once_as_draw_not_found(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(404), Reply(body=PAGE))
    with pytest.raises(EuroDrawNotFound, match=r"no draw result is published .* HTTP 404"):
        fetch(settings, waits)
    assert source.count(path) == 1


def test_other_client_errors_fail_at_once(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(403), Reply(body=PAGE))
    with pytest.raises(FetchError, match="HTTP 403 from"):
        fetch(settings, waits)
    assert source.count(path) == 1


def test_slow_page_times_out_and_is_retried(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(body=PAGE, stall=True))
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out .*gave up after 3 attempts"):
        fetch(settings, waits)
    assert source.count(path) == 3
    assert time.monotonic() - started < 5  # three read timeouts of 0.3 s, not the stall


def test_slow_page_then_a_fast_one_succeeds(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    source.serve(DATE, Reply(body=PAGE, stall=True), Reply(body=PAGE))
    assert fetch(settings, waits).status_code == 200


def test_connection_refused_is_retried(settings: Settings, waits: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nobody = with_euro(settings, results_url=f"http://127.0.0.1:{closed_port}/results/{{date}}")
    with pytest.raises(FetchError, match=r"cannot connect .*gave up after 3 attempts"):
        fetch(nobody, waits)
    assert len(waits) == 2


# --- guards ----------------------------------------------------------------------------


def test_loopback_source_is_refused_without_the_setting_and_not_retried(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    source.serve(DATE, Reply(body=PAGE))
    guarded = settings.model_copy(update={"fetch_allow_loopback": False})
    with pytest.raises(FetchBlocked, match="loopback"):
        fetch(guarded, waits)
    assert source.hits == []


def test_page_larger_than_the_cap_is_refused_and_not_retried(
    settings: Settings, source: EuroSource, waits: list[float]
) -> None:
    path = source.serve(DATE, Reply(body=PAGE))
    with pytest.raises(FetchTooLarge, match="limit of 100 bytes"):
        fetch(with_euro(settings, max_bytes=100), waits)
    assert source.count(path) == 1


# --- Retry-After -----------------------------------------------------------------------


def test_retry_after_in_seconds() -> None:
    assert retry_after_seconds("12", now=datetime.now(UTC)) == 12.0


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=now) == 30.0


def test_retry_after_in_the_past_means_now() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(earlier, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5"])
def test_unusable_retry_after_is_ignored(value: str | None) -> None:
    assert retry_after_seconds(value, now=datetime.now(UTC)) is None
