"""Limits and back-pressure at the door: a per-key request rate and a cap per queue.

The rate is counted by the ``limits`` library (sliding window counter) in Redis when the
store is Redis, and in a SQLite file of the data folder otherwise (``rates.sqlite3``,
rate_storage.py): either way every API process shares one count per key. The queue cap
reads the broker's queue depths at most once a second per process: a flood is refused with
503 instead of filling the broker (it may overshoot by what one second of submissions adds).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from asyncml.api.rate_storage import SqliteRateStorage
from asyncml.auth import Caller
from asyncml.engine import Engine
from asyncml.errors import RateLimited, ServiceUnavailable
from asyncml.settings import Settings

log = logging.getLogger(__name__)

DEPTH_TTL_S = 1.0
QUEUE_FULL_RETRY_S = 5.0


def _storage(settings: Settings) -> Storage:
    if settings.result_backend_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteRateStorage(settings.data_dir / "rates.sqlite3")
    url = settings.result_backend_url.get_secret_value()
    return RedisStorage(f"async+{url}", implementation="redispy")


class RateGate:
    """Counts each keyed request; 429 with ``Retry-After`` and ``RateLimit-*`` past the rate.

    Without keys (auth off) there is no one to count for, and nothing is limited. If the
    counter's storage fails, the request is let through and the failure logged: the rate
    limit protects the service, it must not take it down with Redis.
    """

    def __init__(self, settings: Settings) -> None:
        self.default_rate = settings.rate_limit or None
        self._storage = _storage(settings)
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._items: dict[str, RateLimitItem] = {}

    def close(self) -> None:
        """Lets go of the counters' SQLite file (Redis's pool goes with the process)."""
        if isinstance(self._storage, SqliteRateStorage):
            self._storage.close()

    def _item(self, rate: str) -> RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = parse_many(rate)[0]
        return item

    async def check(self, caller: Caller) -> dict[str, str]:
        """Count one request of ``caller``; the ``RateLimit-*`` headers to answer with."""
        if caller.key is None:
            return {}
        rate = caller.key.rate or self.default_rate
        if not rate:
            return {}
        item = self._item(rate)
        try:
            allowed = await self._limiter.hit(item, caller.owner)
            stats = await self._limiter.get_window_stats(item, caller.owner)
        except Exception:
            log.exception("rate limit storage failed; letting the request through")
            return {}
        reset_in = max(0.0, stats.reset_time - time.time())
        headers = {
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": str(max(0, stats.remaining)),
            "RateLimit-Reset": str(math.ceil(reset_in)),
        }
        if not allowed:
            raise RateLimited(
                f"API key {caller.name!r} is over its rate of {rate}",
                retry_after_s=max(1.0, reset_in),
                extra_headers=headers,
            )
        return headers


class QueueGate:
    """Refuses a submission while its queue holds ``max_depth`` messages or more.

    ``clock`` (seconds, monotonic) times the reading's age; a test passes its own to age a
    reading at once instead of sleeping out ``DEPTH_TTL_S``.
    """

    def __init__(
        self, engine: Engine, max_depth: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.max_depth = max_depth
        self.clock = clock
        self._depths: dict[str, int] = {}
        self._read_at = -math.inf
        self._lock = anyio.Lock()

    async def admit(self, queue: str) -> None:
        if self.max_depth <= 0:
            return
        depth = (await self._current()).get(queue, 0)
        if depth >= self.max_depth:
            raise ServiceUnavailable(
                f"queue {queue!r} is full ({depth} tasks waiting, the cap is "
                f"{self.max_depth}); nothing was queued, retry later",
                retry_after_s=QUEUE_FULL_RETRY_S,
            )

    async def _current(self) -> dict[str, int]:
        if self.clock() - self._read_at < DEPTH_TTL_S:
            return self._depths
        if self._lock.locked() and self._read_at > -math.inf:
            return self._depths  # being refreshed: the last reading, up to a second old
        async with self._lock:  # one reader refreshes; the others use what it read
            if self.clock() - self._read_at >= DEPTH_TTL_S:
                try:
                    # Abandoned if the submission's deadline passes: a frozen broker
                    # never answers the read (the next reader tries again).
                    depths: dict[str, Any] = await anyio.to_thread.run_sync(
                        self.engine.queue_depths, abandon_on_cancel=True
                    )
                    self._depths = {str(k): int(v) for k, v in depths.items()}
                except Exception as exc:  # the broker is down: publishing will say so
                    log.warning("queue depths unavailable: %r", exc)
                self._read_at = self.clock()
        return self._depths
