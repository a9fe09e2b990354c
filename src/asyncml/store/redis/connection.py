"""How both stores talk to Redis: client options, reconnect policy, and the one place a
Redis failure becomes the service's ``ServiceUnavailable`` (a 503, never a 500)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from asyncml.errors import ServiceUnavailable


def client_options() -> dict[str, Any]:
    # socket_timeout bounds commands against a hung Redis (503, not a hung request); a
    # long-poll passes its own timeout to get_message and is not cut short by it.
    return {
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "health_check_interval": 30,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


# The API's async pool: a request holds a connection only for its commands (long-polls and
# event streams wait on the pub/sub listener's notices, holding none), so a burst of
# requests needs at most one each. (A blocking pool made bursts wait up to its timeout.)
ASYNC_POOL_SIZE = 1024


def sync_retry() -> Retry:
    """A pooled connection is dead after Redis restarts: reconnect and retry, briefly."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


def async_retry() -> AsyncRetry:
    """The same policy as ``sync_retry``, for redis.asyncio (a class of its own)."""
    return AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


def unavailable(exc: RedisError) -> ServiceUnavailable:
    # The message names the failure, never the URL: it may carry a password.
    return ServiceUnavailable(f"result store (Redis) unavailable: {type(exc).__name__}")


@contextmanager
def translated() -> Iterator[None]:
    """Raise any ``RedisError`` of the block as ``ServiceUnavailable``.

    A plain (not async) context manager on purpose: an exception raised by an ``await``
    inside the block passes through it the same way, so the async store uses it too.
    """
    try:
        yield
    except RedisError as exc:
        raise unavailable(exc) from exc
