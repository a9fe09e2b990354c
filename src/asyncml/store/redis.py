"""Production task store on Redis: one hash per task, Lua compare-and-set, pub/sub on finish.

A waiting client subscribes to the task's channel *before* reading the record, so a finish
that lands between the read and the wait is never missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
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

from asyncml.errors import InputInvalid, ServiceUnavailable
from asyncml.records import (
    ApiKey,
    Callback,
    Delivery,
    ErrorBody,
    TaskPage,
    TaskRecord,
    TaskStatus,
)
from asyncml.store.base import Cancelled
from asyncml.store.dead_letters import DEAD_LETTER_TTL_S, DeadLetter
from asyncml.store.notices import FinishNotices

log = logging.getLogger(__name__)

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
# A task leaves its owner's set of open tasks when it becomes final. The set's key is made
# from the record's owner field: fine on one Redis, not on Redis Cluster (not supported).
_CLOSE = """
local function close(record)
  local owner = redis.call('HGET', record, 'owner')
  if owner then redis.call('ZREM', 'asyncml:open:' .. owner, redis.call('HGET', record, 'id')) end
end
"""
# KEYS[1] record, KEYS[2] owner's index, KEYS[3] owner's open tasks; ARGV ttl, submitted
# (epoch), id, max_open (0: no cap), then the record's field/value pairs. 0 if over the cap.
_CREATE = """
local ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl)
local cap = tonumber(ARGV[4])
if cap > 0 and redis.call('ZCARD', KEYS[3]) >= cap then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 2 * ttl)
redis.call('EXPIRE', KEYS[2], 2 * ttl)
redis.call('EXPIRE', KEYS[3], 2 * ttl)
return 1
"""
_DELETE = (
    _CLOSE
    + """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then redis.call('ZREM', 'asyncml:owner:' .. owner, redis.call('HGET', KEYS[1], 'id')) end
close(KEYS[1])
return redis.call('DEL', KEYS[1])
"""
)
# KEYS[1] record, KEYS[2] channel; ARGV status, finished_at, result, error, ttl
_FINISH = (
    _CLOSE
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'QUEUED' and s ~= 'STARTED' then return 0 end
close(KEYS[1])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
"""
)
# KEYS[1] record, KEYS[2] channel; ARGV finished_at, ttl
_CANCEL = (
    _CLOSE
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'QUEUED' then
  close(KEYS[1])
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'finished_at', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('PUBLISH', KEYS[2], 'CANCELLED')
end
return s
"""
)


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
_OWNER_PREFIX = "asyncml:owner:"
_OPEN_PREFIX = "asyncml:open:"
_KEY_PREFIX = "asyncml:apikey:"
_KEY_NAMES = "asyncml:apikeys"
_LIST_SCAN_MAX = 5000  # index entries one list request may read before it returns a cursor


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
    mapping["owner"] = record.owner
    return mapping


def _create_call(record: TaskRecord, ttl_s: int, max_open: int) -> tuple[list[str], list[Any]]:
    keys = [_key(record.id), _OWNER_PREFIX + record.owner, _OPEN_PREFIX + record.owner]
    args: list[Any] = [ttl_s, repr(record.submitted_at.timestamp()), record.id, max_open]
    for field, value in _mapping(record).items():
        args += [field, value]
    return keys, args


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    if cursor is None:
        return None
    score, sep, task_id = cursor.removeprefix("s").partition(":")
    try:
        if not (cursor.startswith("s") and sep and task_id):
            raise ValueError(cursor)
        return float(score), task_id
    except ValueError:
        raise InputInvalid("cursor: not a cursor this server gave out") from None


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
        owner=fields.get("owner", ""),
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
        self._create = self._r.register_script(_CREATE)
        self._delete = self._r.register_script(_DELETE)

    def create(self, record: TaskRecord, *, max_open: int = 0) -> bool:
        keys, args = _create_call(record, self.ttl_s, max_open)
        try:
            return bool(self._create(keys=keys, args=args))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def get(self, task_id: str) -> TaskRecord | None:
        try:
            return _parse(self._r.hgetall(_key(task_id)))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def delete(self, task_id: str) -> None:
        try:
            self._delete(keys=[_key(task_id)])
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

    def key_add(self, key: ApiKey) -> bool:
        try:
            if not self._r.hsetnx(_KEY_NAMES, key.name, key.digest):
                return False
            self._r.set(_KEY_PREFIX + key.digest, key.model_dump_json())
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return True

    def key_get(self, digest: str) -> ApiKey | None:
        try:
            raw = self._r.get(_KEY_PREFIX + digest)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return None if raw is None else ApiKey.model_validate_json(_decode(raw))

    def key_list(self) -> list[ApiKey]:
        try:
            digests = [_decode(d) for d in self._r.hvals(_KEY_NAMES)]
            raws = self._r.mget([_KEY_PREFIX + d for d in digests]) if digests else []
        except RedisError as exc:
            raise _unavailable(exc) from exc
        keys = [ApiKey.model_validate_json(_decode(raw)) for raw in raws if raw is not None]
        return sorted(keys, key=lambda k: k.name)

    def key_revoke(self, name: str) -> bool:
        try:
            digest = self._r.hget(_KEY_NAMES, name)
            if digest is None:
                return False
            with self._r.pipeline() as pipe:  # MULTI: both go, or neither
                pipe.delete(_KEY_PREFIX + _decode(digest))
                pipe.hdel(_KEY_NAMES, name)
                pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return True

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

    # --- dead-letter queue: tasks that killed their worker on every attempt ---------
    # A hash per entry (expiring DEAD_LETTER_TTL_S after its dead_at) and one sorted set
    # of task ids by dead_at, trimmed of members whose hash has expired.

    def dead_letter_add(self, entry: DeadLetter) -> None:
        dead_at = entry.dead_at.timestamp()
        try:
            with self._r.pipeline() as pipe:  # MULTI/EXEC: the hash and its index together
                pipe.hset(_dead_letter_key(entry.task_id), mapping=_dead_letter_mapping(entry))
                pipe.expireat(_dead_letter_key(entry.task_id), int(dead_at + DEAD_LETTER_TTL_S))
                pipe.zadd(_DEAD_LETTERS, {entry.task_id: dead_at})
                pipe.zremrangebyscore(_DEAD_LETTERS, "-inf", time.time() - DEAD_LETTER_TTL_S)
                pipe.expire(_DEAD_LETTERS, DEAD_LETTER_TTL_S)
                pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def dead_letter_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        try:
            self._r.zremrangebyscore(_DEAD_LETTERS, "-inf", time.time() - DEAD_LETTER_TTL_S)
            ids = _names(self._r.zrange(_DEAD_LETTERS, offset, offset + limit - 1)) if limit else []
            with self._r.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hgetall(_dead_letter_key(task_id))
                raws = pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return [entry for raw in raws if (entry := _parse_dead_letter(raw)) is not None]

    def dead_letter_count(self) -> int:
        try:
            self._r.zremrangebyscore(_DEAD_LETTERS, "-inf", time.time() - DEAD_LETTER_TTL_S)
            return int(self._r.zcard(_DEAD_LETTERS))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def dead_letter_get(self, task_id: str) -> DeadLetter | None:
        try:
            return _parse_dead_letter(self._r.hgetall(_dead_letter_key(task_id)))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    def dead_letter_remove(self, task_id: str) -> bool:
        try:
            with self._r.pipeline() as pipe:
                pipe.delete(_dead_letter_key(task_id))
                pipe.zrem(_DEAD_LETTERS, task_id)
                deleted, _ = pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return bool(deleted)

    def dead_letter_purge(self) -> int:
        try:
            purged = 0
            while names := _names(self._r.zrange(_DEAD_LETTERS, 0, 499)):
                with self._r.pipeline() as pipe:
                    pipe.delete(*(_dead_letter_key(name) for name in names))
                    pipe.zrem(_DEAD_LETTERS, *names)
                    deleted, _ = pipe.execute()
                purged += int(deleted)
            return purged
        except RedisError as exc:
            raise _unavailable(exc) from exc


_DEAD_LETTERS = "asyncml:dlq"
_DEAD_LETTER_PREFIX = "asyncml:dlq:"


def _dead_letter_key(task_id: str) -> str:
    return _DEAD_LETTER_PREFIX + task_id


def _names(members: Any) -> list[str]:
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


def _dead_letter_mapping(entry: DeadLetter) -> Mapping[Any, Any]:
    """One field per top-level value, JSON-encoded: readable with redis-cli HGETALL."""
    return {
        name: json.dumps(value)
        for name, value in entry.model_dump(mode="json").items()
        if value is not None
    }


def _parse_dead_letter(raw: Mapping[Any, Any]) -> DeadLetter | None:
    if not raw:
        return None
    return DeadLetter.model_validate({k.decode(): json.loads(v) for k, v in raw.items()})


class AsyncRedisTaskStore:
    def __init__(self, url: str, *, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._r = aioredis.Redis.from_url(url, **_client_options(), retry=_async_retry())
        self._notices = FinishNotices()
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self._cancel = self._r.register_script(_CANCEL)
        self._create = self._r.register_script(_CREATE)
        self._delete = self._r.register_script(_DELETE)

    async def create(self, record: TaskRecord, *, max_open: int = 0) -> bool:
        keys, args = _create_call(record, self.ttl_s, max_open)
        try:
            return bool(await self._create(keys=keys, args=args))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def list_tasks(
        self,
        owner: str,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """Walk the owner's index newest first (score = submit time, ties by id), reading
        records in batches; ids whose record expired are dropped from the index on the way."""
        after = _parse_cursor(cursor)
        top: float | str = "+inf" if after is None else after[0]
        found: list[TaskRecord] = []
        last: tuple[float, str] | None = None
        scanned, offset, batch = 0, 0, max(2 * limit, 50)
        index = _OWNER_PREFIX + owner
        try:
            while scanned < _LIST_SCAN_MAX:
                entries = await self._r.zrevrangebyscore(
                    index, top, "-inf", start=offset, num=batch, withscores=True
                )
                if not entries:
                    return TaskPage(tasks=found)
                offset += len(entries)
                pairs: list[Any] = list(entries)  # (member, score) with withscores
                ids = [(_decode(member), float(score)) for member, score in pairs]
                if after is not None:
                    ids = [(i, sc) for i, sc in ids if sc < after[0] or i < after[1]]
                async with self._r.pipeline(transaction=False) as pipe:
                    for task_id, _ in ids:
                        pipe.hgetall(_key(task_id))
                    raws = await pipe.execute()
                gone = []
                for (task_id, score), raw in zip(ids, raws, strict=True):
                    scanned += 1
                    last = (score, task_id)
                    record = _parse(raw)
                    if record is None:
                        gone.append(task_id)
                        continue
                    if (status is None or record.status is status) and (
                        kind is None or record.kind == kind
                    ):
                        found.append(record)
                        if len(found) == limit:
                            break
                if gone:
                    await self._r.zrem(index, *gone)
                if len(found) == limit:
                    break
        except RedisError as exc:
            raise _unavailable(exc) from exc
        # A full page (or the scan bound): more may follow; an empty next page ends it.
        next_cursor = None if last is None else f"s{last[0]!r}:{last[1]}"
        return TaskPage(tasks=found, next_cursor=next_cursor)

    async def key_get(self, digest: str) -> ApiKey | None:
        try:
            raw = await self._r.get(_KEY_PREFIX + digest)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return None if raw is None else ApiKey.model_validate_json(_decode(raw))

    async def get(self, task_id: str) -> TaskRecord | None:
        try:
            return _parse(await self._r.hgetall(_key(task_id)))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def delete(self, task_id: str) -> None:
        try:
            await self._delete(keys=[_key(task_id)])
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
        """Register for the task's finish notice, then read the record (a finish that lands
        in between is seen in the record or by the notice), then wait for the notice. The
        record is also re-read every second, so a notice lost while the listener
        reconnects (a Redis restart) costs at most a second."""
        deadline = time.monotonic() + timeout_s
        self._ensure_listener()
        with self._notices.registered(task_id) as notice:
            record = await self.get(task_id)
            while record is not None and not record.final:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(notice), min(remaining, 1.0))
                except TimeoutError:
                    pass
                record = await self.get(task_id)
            return record

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        """One subscription per API process to every task's finish channel; each notice
        wakes the requests waiting on that task. (A subscription per waiting request would
        cost a Redis connection each: pub/sub connections are closed, not pooled.)

        It also stops at ``_closing``, not only when cancelled: once in CI a cancellation
        was lost somewhere inside redis-py's timed reads, the loop ran on, and ``close``
        waited on it until the test's 300 s timeout."""
        while not self._closing:
            try:
                async with self._r.pubsub() as pubsub:
                    await pubsub.psubscribe(_CHANNEL_PREFIX + "*")
                    while not self._closing:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is None or message.get("type") != "pmessage":
                            continue
                        channel = _decode(message["channel"])
                        self._notices.wake([channel[len(_CHANNEL_PREFIX) :]])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone: waiters fall back to their 1 s re-read
                log.warning("finish notices unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.5)

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
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            # Bounded: a listener that missed its cancellation sees _closing within its
            # 1 s read; close must not hang an API shutdown on it either way.
            done, _ = await asyncio.wait({self._listener}, timeout=3)
            if not done:
                log.warning("finish-notice listener did not stop within 3 s")
        await self._r.aclose()
