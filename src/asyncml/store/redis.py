"""Production task store on Redis: one hash per task, Lua compare-and-set, pub/sub on finish.

A waiting client subscribes to the task's channel *before* reading the record, so a finish
that lands between the read and the wait is never missed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from asyncml.errors import ServiceUnavailable
from asyncml.store.base import Cancelled
from asyncml.store.records import Callback, Delivery, ErrorBody, TaskRecord, TaskStatus

_PREFIX = "asyncml:task:"
_CHANNEL_PREFIX = "asyncml:done:"

# KEYS[1] record; ARGV[1] started_at. Returns the attempt number, 0 for "do not run".
_START = """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'QUEUED' then
  redis.call('HSET', KEYS[1], 'status', 'STARTED', 'started_at', ARGV[1])
elseif s ~= 'STARTED' then
  return 0
end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""
# KEYS[1] record, KEYS[2] channel; ARGV status, finished_at, result, error, ttl
_FINISH = """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'QUEUED' and s ~= 'STARTED' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
"""
# KEYS[1] record, KEYS[2] channel; ARGV finished_at, ttl
_CANCEL = """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'QUEUED' then
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'finished_at', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('PUBLISH', KEYS[2], 'CANCELLED')
end
return s
"""


# KEYS[1] schedule; ARGV[1] interval in microseconds. Redis's clock, so workers on hosts
# whose clocks differ still share one schedule. Returns microseconds to wait.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], string.format('%d', start + interval),
           'PX', math.floor((start + interval - now) / 1000) + 60000)
return start - now
"""
# Only on a record that still exists: an expired task must not come back as a bare hash.
_SET_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""
_CACHE_PREFIX = "asyncml:cache:"
_IDEMPOTENCY_PREFIX = "asyncml:idem:"
_DELIVERY_PREFIX = "delivery:"
_SLOT_PREFIX = "asyncml:slot:"


def _key(task_id: str) -> str:
    return _PREFIX + task_id


def _channel(task_id: str) -> str:
    return _CHANNEL_PREFIX + task_id


def _mapping(record: TaskRecord) -> Mapping[Any, Any]:
    mapping = {
        "id": record.id,
        "kind": record.kind,
        "status": record.status.value,
        "submitted_at": record.submitted_at.isoformat(),
    }
    if record.callback is not None:
        mapping["callback"] = record.callback.model_dump_json()
    return mapping


def _parse(raw: Mapping[Any, Any]) -> TaskRecord | None:
    if not raw:
        return None
    fields = {k.decode(): v.decode() for k, v in raw.items()}

    def when(name: str) -> datetime | None:
        return datetime.fromisoformat(fields[name]) if name in fields else None

    return TaskRecord(
        id=fields["id"],
        kind=fields["kind"],
        status=TaskStatus(fields["status"]),
        result=json.loads(fields["result"]) if "result" in fields else None,
        error=ErrorBody.model_validate_json(fields["error"]) if "error" in fields else None,
        submitted_at=datetime.fromisoformat(fields["submitted_at"]),
        started_at=when("started_at"),
        finished_at=when("finished_at"),
        callback=Callback.model_validate_json(fields["callback"]) if "callback" in fields else None,
        deliveries={
            name.removeprefix(_DELIVERY_PREFIX): Delivery.model_validate_json(value)
            for name, value in fields.items()
            if name.startswith(_DELIVERY_PREFIX)
        },
    )


def _client_options() -> dict[str, Any]:
    # socket_timeout bounds commands against a hung Redis (503, not a hung request); a
    # long-poll passes its own timeout to get_message and is not cut short by it.
    return {
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "health_check_interval": 30,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def _retry() -> Retry:
    """A pooled connection is dead after Redis restarts: reconnect and retry, briefly."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


def _async_retry() -> AsyncRetry:
    return AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


def _unavailable(exc: RedisError) -> ServiceUnavailable:
    # The message names the failure, never the URL: it may carry a password.
    return ServiceUnavailable(f"result store (Redis) unavailable: {type(exc).__name__}")


class RedisTaskStore:
    def __init__(self, url: str, *, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._r = redis.Redis.from_url(url, **_client_options(), retry=_retry())
        self._start = self._r.register_script(_START)
        self._finish = self._r.register_script(_FINISH)
        self._cancel = self._r.register_script(_CANCEL)
        self._reserve = self._r.register_script(_RESERVE)
        self._set_delivery = self._r.register_script(_SET_DELIVERY)

    def create(self, record: TaskRecord) -> None:
        try:
            with self._r.pipeline() as pipe:
                pipe.hset(_key(record.id), mapping=_mapping(record))
                pipe.expire(_key(record.id), self.ttl_s)
                pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def get(self, task_id: str) -> TaskRecord | None:
        try:
            return _parse(self._r.hgetall(_key(task_id)))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def delete(self, task_id: str) -> None:
        try:
            self._r.delete(_key(task_id))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def start(self, task_id: str, at: datetime) -> int:
        try:
            return int(self._start(keys=[_key(task_id)], args=[at.isoformat()]))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def finish(
        self,
        task_id: str,
        status: TaskStatus,
        at: datetime,
        *,
        result: Any = None,
        error: ErrorBody | None = None,
    ) -> bool:
        args = [
            status.value,
            at.isoformat(),
            "" if result is None else json.dumps(result),
            "" if error is None else error.model_dump_json(),
            self.ttl_s,
        ]
        try:
            return bool(self._finish(keys=[_key(task_id), _channel(task_id)], args=args))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def cancel(self, task_id: str, at: datetime) -> Cancelled:
        try:
            before = self._cancel(
                keys=[_key(task_id), _channel(task_id)], args=[at.isoformat(), self.ttl_s]
            )
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return Cancelled(self.get(task_id), done=before == b"QUEUED")

    def set_delivery(self, task_id: str, event: str, delivery: Delivery) -> None:
        try:
            self._set_delivery(
                keys=[_key(task_id)], args=[_DELIVERY_PREFIX + event, delivery.model_dump_json()]
            )
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def cache_get(self, key: str) -> str | None:
        try:
            value = self._r.get(_CACHE_PREFIX + key)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return None if value is None else value.decode() if isinstance(value, bytes) else value

    def cache_set(self, key: str, value: str) -> None:
        try:
            self._r.set(_CACHE_PREFIX + key, value)
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def reserve_slot(self, key: str, interval_s: float) -> float:
        try:
            wait_us = self._reserve(keys=[_SLOT_PREFIX + key], args=[int(interval_s * 1e6)])
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return max(0.0, int(wait_us) / 1e6)

    def ping(self) -> None:
        try:
            self._r.ping()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def close(self) -> None:
        self._r.close()


class AsyncRedisTaskStore:
    def __init__(self, url: str, *, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._r = aioredis.Redis.from_url(url, **_client_options(), retry=_async_retry())
        self._cancel = self._r.register_script(_CANCEL)

    async def create(self, record: TaskRecord) -> None:
        try:
            async with self._r.pipeline() as pipe:
                pipe.hset(_key(record.id), mapping=_mapping(record))
                pipe.expire(_key(record.id), self.ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def get(self, task_id: str) -> TaskRecord | None:
        try:
            return _parse(await self._r.hgetall(_key(task_id)))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def delete(self, task_id: str) -> None:
        try:
            await self._r.delete(_key(task_id))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def cancel(self, task_id: str, at: datetime) -> Cancelled:
        try:
            before = await self._cancel(
                keys=[_key(task_id), _channel(task_id)], args=[at.isoformat(), self.ttl_s]
            )
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return Cancelled(await self.get(task_id), done=before == b"QUEUED")

    async def wait(self, task_id: str, timeout_s: float) -> TaskRecord | None:
        deadline = time.monotonic() + timeout_s
        try:
            async with self._r.pubsub() as pubsub:
                await pubsub.subscribe(_channel(task_id))
                record = await self.get(task_id)
                while record is not None and not record.final:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=remaining
                    )
                    if message is not None:
                        record = await self.get(task_id)
                return record
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def claim_key(
        self, key: str, fingerprint: str, task_id: str, ttl_s: int
    ) -> tuple[str, str] | None:
        name = _IDEMPOTENCY_PREFIX + key
        try:
            if await self._r.set(name, f"{task_id} {fingerprint}", nx=True, ex=ttl_s):
                return None
            bound = await self._r.get(name)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if bound is None:  # expired between the two calls: try once more
            return await self.claim_key(key, fingerprint, task_id, ttl_s)
        text = bound.decode() if isinstance(bound, bytes) else bound
        bound_id, _, bound_print = text.partition(" ")
        return bound_id, bound_print

    async def release_key(self, key: str) -> None:
        try:
            await self._r.delete(_IDEMPOTENCY_PREFIX + key)
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self._r.ping()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await self._r.aclose()
