"""Fetching one results page politely and resiliently, inside a deadline.

* Polite: a User-Agent naming asyncml and its version (plus the operator's contact when
  ``ASYNCML_SCRAPER_CONTACT`` is set), and at most ``ASYNCML_EURO_RATE_PER_S`` requests per
  second to the source's host across every worker process: each request first books a slot
  in the task store's shared schedule and sleeps until it (that sleep is the rate limit).
* Resilient: timeouts, connection errors, 429 and 5xx are retried with exponential backoff
  and jitter, honouring ``Retry-After``, up to ``ASYNCML_EURO_MAX_ATTEMPTS`` requests; the
  last cause is what the task fails with. A ``Retry-After`` longer than
  ``ASYNCML_EURO_RETRY_MAX_S`` ends the task at once: the source asked us not to come back
  sooner, and waiting that long is not this task's job. A 404 means no draw was published
  for that date: it fails at once, never retried.
* Bounded: every request and every wait fits before ``deadline`` (set inside the kind's soft
  time limit), so the task ends with the real cause rather than a timeout.
* Guarded: requests go through the SSRF-guarded Fetcher with a small byte cap.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from asyncml.errors import FetchError
from asyncml.fetch import Fetched, Fetcher
from asyncml.settings import Settings
from asyncml.tasks._euro_errors import EuroDrawNotFound

log = logging.getLogger(__name__)

# No attempt starts with less time than this before the deadline: it could not finish.
MIN_ATTEMPT_S = 1.0
_TRANSIENT_CAUSES = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class SourcePolicy:
    """How the source is treated; read from settings once per task."""

    user_agent: str
    min_interval_s: float
    max_attempts: int
    retry_base_s: float
    retry_max_s: float
    connect_timeout_s: float
    read_timeout_s: float
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SourcePolicy:
        from asyncml._version import __version__

        contact = settings.scraper_contact.strip()
        return cls(
            user_agent=f"asyncml/{__version__}" + (f" (+{contact})" if contact else ""),
            min_interval_s=1.0 / settings.euro.rate_per_s,
            max_attempts=settings.euro.max_attempts,
            retry_base_s=settings.euro.retry_base_s,
            retry_max_s=settings.euro.retry_max_s,
            connect_timeout_s=settings.euro.connect_timeout_s,
            read_timeout_s=settings.euro.read_timeout_s,
            max_bytes=min(settings.fetch_max_bytes, settings.euro.max_bytes),
        )


class SlotSchedule(Protocol):
    """The part of the task store that spaces requests out across processes."""

    def reserve_slot(self, key: str, interval_s: float) -> float: ...


class _TryAgain(Exception):
    """A transient failure: ``error`` is what the task fails with if no attempt is left."""

    def __init__(self, error: FetchError, retry_after_s: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after_s = retry_after_s


class _OutOfTime(Exception):
    """The next request cannot start and finish before the deadline."""


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def fetch_page(
    url: str,
    *,
    fetcher: Fetcher,
    schedule: SlotSchedule,
    policy: SourcePolicy,
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """The 2xx response of ``url``; EuroDrawNotFound on 404, FetchError on anything else.

    ``deadline`` is a ``time.monotonic()`` value; ``sleep`` is injectable so tests can
    record the waits instead of taking them.
    """
    slot_key = f"euro.results:{httpx.URL(url).host}"
    last: FetchError | None = None
    attempts = 0

    def attempt() -> Fetched:
        nonlocal attempts, last
        attempts += 1
        wait = schedule.reserve_slot(slot_key, policy.min_interval_s)
        if time.monotonic() + wait + MIN_ATTEMPT_S > deadline:
            raise _OutOfTime(
                f"the request rate limit to the source (a request every "
                f"{policy.min_interval_s:g} s across all workers) leaves no time to fetch "
                f"{url} before the task's time limit"
            )
        if wait > 0:
            sleep(wait)  # the rate limit itself, not synchronisation
        try:
            return _request(url, fetcher, policy, deadline)
        except _TryAgain as exc:
            last = exc.error
            raise

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        return time.monotonic() + state.upcoming_sleep + MIN_ATTEMPT_S > deadline

    retrying = Retrying(
        retry=retry_if_exception_type(_TryAgain),
        stop=stop,
        wait=_Wait(policy),
        sleep=sleep,
        before_sleep=_log_retry(url, policy),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _TryAgain as exc:
        why = (
            ""
            if attempts >= policy.max_attempts
            else "; too little time left for another before the task's time limit"
        )
        raise FetchError(
            f"{exc.error.message} (gave up after {_plural(attempts, 'attempt')}{why})"
        ) from exc
    except _OutOfTime as exc:
        if last is not None:
            raise FetchError(f"{last.message}; then {exc}") from exc
        raise FetchError(str(exc)) from exc


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _request(url: str, fetcher: Fetcher, policy: SourcePolicy, deadline: float) -> Fetched:
    """One GET, its outcome sorted into: success, retry, or fail at once."""
    left = deadline - time.monotonic()
    one = dataclasses.replace(
        fetcher,
        connect_timeout_s=policy.connect_timeout_s,
        read_timeout_s=policy.read_timeout_s,
        total_timeout_s=max(0.001, min(policy.connect_timeout_s + policy.read_timeout_s, left)),
        max_bytes=min(fetcher.max_bytes, policy.max_bytes),
    )
    try:
        page = one.get(url, headers={"User-Agent": policy.user_agent, "Accept": "text/html"})
    except FetchError as exc:
        if type(exc) is FetchError and isinstance(
            exc.__cause__, (*_TRANSIENT_CAUSES, TimeoutError)
        ):
            raise _TryAgain(exc) from exc
        raise
    status = page.status_code
    if 200 <= status < 300:
        return page
    if status == 404:
        raise EuroDrawNotFound(
            f"no draw result is published at {page.final_url}: the source answered HTTP 404"
        )
    error = FetchError(f"HTTP {status} from {page.final_url}")
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(page.headers.get("retry-after"), now=datetime.now(UTC))
        if retry_after is not None and retry_after > policy.retry_max_s:
            raise FetchError(
                f"{error.message}, which asks to retry after {retry_after:g} s: longer than "
                f"ASYNCML_EURO_RETRY_MAX_S ({policy.retry_max_s:g} s), so not retried"
            )
        raise _TryAgain(error, retry_after)
    raise error


class _Wait:
    """``Retry-After`` when the source gave one, else exponential backoff with jitter."""

    def __init__(self, policy: SourcePolicy) -> None:
        self._backoff = wait_exponential_jitter(
            multiplier=policy.retry_base_s, max=policy.retry_max_s, jitter=policy.retry_base_s
        )

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _TryAgain) and exc.retry_after_s is not None:
            return exc.retry_after_s
        return float(self._backoff(state))


def _log_retry(url: str, policy: SourcePolicy) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "euro.results: %s; attempt %d of %d, retrying in %.2f s",
            exc,
            state.attempt_number,
            policy.max_attempts,
            state.upcoming_sleep,
        )

    return before_sleep
