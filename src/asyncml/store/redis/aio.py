"""The async side of the Redis store (the API): records, listing, idempotency, long-polls.

A waiting client registers for the task's finish notice *before* reading the record, so a
finish that lands between the read and the wait is never missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from asyncml.records import (
    ApiKey,
    QueueStanding,
    TaskEvent,
    TaskPage,
    TaskRecord,
    TaskStatus,
    WorkerInfo,
)
from asyncml.store.base import Cancelled, heartbeat_fresh
from asyncml.store.durability import StoreDurability
from asyncml.store.notices import EventWatch, FinishNotices
from asyncml.store.redis import codec, persistence, scripts
from asyncml.store.redis.connection import (
    ASYNC_POOL_SIZE,
    async_retry,
    client_options,
    translated,
)
from asyncml.store.redis.history import HistoryMixin
from asyncml.store.redis.scripts import (
    CHANNEL_PREFIX,
    EVENT_CHANNEL_PREFIX,
    IDEMPOTENCY_PREFIX,
    KEY_PREFIX,
    MOVE_CHANNEL_PREFIX,
    QUEUED_PREFIX,
    RUNNING_PREFIX,
    RUNS_PREFIX,
    WORKERS,
)

log = logging.getLogger(__name__)

# How often the listener looks whether event streams opened or closed (it subscribes to
# their channels only while one is open).
_LISTEN_TICK_S = 0.25
_LIST_SCAN_MAX = 5000  # index entries one list request may read before it returns a cursor


class AsyncRedisTaskStore(HistoryMixin):
    def __init__(self, url: str, *, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._r = aioredis.Redis.from_url(
            url, max_connections=ASYNC_POOL_SIZE, **client_options(), retry=async_retry()
        )
        self._notices = FinishNotices()
        self._watch_events = EventWatch()
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self._cancel = self._r.register_script(scripts.CANCEL)
        self._create = self._r.register_script(scripts.CREATE)
        self._delete = self._r.register_script(scripts.DELETE)

    async def create(self, record: TaskRecord, *, max_open: int = 0) -> bool:
        keys, args = codec.create_call(record, self.ttl_s, max_open)
        with translated():
            return bool(await self._create(keys=keys, args=args))

    async def list_tasks(
        self,
        owner: str,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        return await self._walk(
            scripts.OWNER_PREFIX + owner,
            status=status,
            kind=kind,
            since=None,
            limit=limit,
            cursor=cursor,
        )

    async def _walk(
        self,
        index: str,
        *,
        status: TaskStatus | None,
        kind: str | None,
        since: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> TaskPage:
        """Walk an index newest first (score = submit time, ties by id), reading records
        in batches; ids whose record expired are dropped from the index on the way."""
        after = codec.parse_cursor(cursor)
        top: float | str = "+inf" if after is None else after[0]
        bottom: float | str = "-inf" if since is None else since.timestamp()
        found: list[TaskRecord] = []
        last: tuple[float, str] | None = None
        scanned, offset, batch = 0, 0, max(2 * limit, 50)
        with translated():
            while scanned < _LIST_SCAN_MAX:
                entries = await self._r.zrevrangebyscore(
                    index, top, bottom, start=offset, num=batch, withscores=True
                )
                if not entries:
                    return TaskPage(tasks=found)
                offset += len(entries)
                pairs: list[Any] = list(entries)  # (member, score) with withscores
                ids = [(codec.decode(member), float(score)) for member, score in pairs]
                if after is not None:
                    ids = [(i, sc) for i, sc in ids if sc < after[0] or i < after[1]]
                async with self._r.pipeline(transaction=False) as pipe:
                    for task_id, _ in ids:
                        pipe.hgetall(codec.key(task_id))
                    raws = await pipe.execute()
                gone = []
                for (task_id, score), raw in zip(ids, raws, strict=True):
                    scanned += 1
                    last = (score, task_id)
                    record = codec.parse(raw)
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
        # A full page (or the scan bound): more may follow; an empty next page ends it.
        next_cursor = None if last is None else codec.format_cursor(*last)
        return TaskPage(tasks=found, next_cursor=next_cursor)

    async def key_get(self, digest: str) -> ApiKey | None:
        with translated():
            raw = await self._r.get(KEY_PREFIX + digest)
        return None if raw is None else ApiKey.model_validate_json(codec.decode(raw))

    async def get(self, task_id: str) -> TaskRecord | None:
        with translated():
            return codec.parse(await self._r.hgetall(codec.key(task_id)))

    async def delete(self, task_id: str) -> None:
        with translated():
            await self._delete(keys=[codec.key(task_id)])

    async def cancel(self, task_id: str, at: datetime) -> Cancelled:
        with translated():
            before = await self._cancel(
                keys=[codec.key(task_id), codec.channel(task_id)], args=[at.isoformat(), self.ttl_s]
            )
        return Cancelled(await self.get(task_id), done=before == b"QUEUED")

    async def wait(
        self, task_id: str, timeout_s: float, *, owner: str | None = None
    ) -> TaskRecord | None:
        """Register for the task's finish notice, then read the record (a finish that lands
        in between is seen in the record or by the notice), then wait for the notice. The
        record is also re-read every second, so a notice lost while the listener
        reconnects (a Redis restart) costs at most a second."""
        deadline = time.monotonic() + timeout_s
        self._ensure_listener()
        with self._notices.registered(task_id) as notice:
            record = await self.get(task_id)
            if record is not None and owner is not None and record.owner != owner:
                return record
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

        The event and queue-move channels are subscribed to only while a request of this
        process waits on them (an event stream is open): a process nobody watches from
        receives one notice per task, as before events existed. A waiter that registers
        while they are not subscribed is seen within ``_LISTEN_TICK_S``; every waiter of a
        kind looks again once its channels are subscribed, so none waits on a notice that
        was published before.

        It also stops at ``_closing``, not only when cancelled: once in CI a cancellation
        was lost somewhere inside redis-py's timed reads, the loop ran on, and ``close``
        waited on it until the test's 300 s timeout."""
        watched = (EVENT_CHANNEL_PREFIX + "*", MOVE_CHANNEL_PREFIX + "*")
        while not self._closing:
            try:
                async with self._r.pubsub() as pubsub:
                    await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                    self._notices.wake(self._notices.awaited())  # lost while unsubscribed
                    events_on = False
                    while not self._closing:
                        wanted = bool(self._watch_events)
                        if wanted != events_on:
                            if wanted:
                                await pubsub.psubscribe(*watched)
                                for notices in (
                                    self._watch_events.events,
                                    self._watch_events.moves,
                                ):
                                    notices.wake(notices.awaited())
                            else:
                                await pubsub.punsubscribe(*watched)
                            events_on = wanted
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=_LISTEN_TICK_S
                        )
                        if message is None or message.get("type") != "pmessage":
                            continue
                        channel = codec.decode(message["channel"])
                        if channel.startswith(EVENT_CHANNEL_PREFIX):
                            self._watch_events.events.wake([channel[len(EVENT_CHANNEL_PREFIX) :]])
                        elif channel.startswith(MOVE_CHANNEL_PREFIX):
                            self._watch_events.moves.wake([channel[len(MOVE_CHANNEL_PREFIX) :]])
                        else:
                            self._notices.wake([channel.removeprefix(CHANNEL_PREFIX)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone: waiters fall back to their 1 s re-read
                log.warning("finish notices unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.5)  # a reconnect back-off, not a wait for an event

    async def events_after(
        self, task_id: str, after: str | None, limit: int = scripts.EVENTS_KEPT
    ) -> list[TaskEvent]:
        start = "-" if not after else f"({after}"
        with translated():
            try:
                entries = await self._r.xrange(codec.events_key(task_id), start, "+", count=limit)
            except ResponseError:  # an id this stream never gave out: read from the start
                entries = await self._r.xrange(codec.events_key(task_id), "-", "+", count=limit)
        return codec.parse_events(task_id, entries)

    async def wait_events(
        self, task_id: str, after: str | None, timeout_s: float, *, queue: str | None = None
    ) -> list[TaskEvent]:
        """Events after ``after``, waiting up to ``timeout_s`` for the first (or, with
        ``queue``, for that queue's order to move: then possibly none). Registered before
        the read, so an event that lands in between wakes the wait; the listener wakes
        every waiter when it (re)subscribes, so none waits on a notice lost meanwhile."""
        self._ensure_listener()
        return await self._watch_events.wait(
            task_id, queue, timeout_s, lambda: self.events_after(task_id, after)
        )

    def watchers(self) -> int:
        """Requests waiting on a task's finish or events in this process (for tests)."""
        return len(self._notices.awaited()) + len(self._watch_events)

    async def standing(self, record: TaskRecord) -> QueueStanding | None:
        """Where a QUEUED task stands in its queue; None if it is not queued."""
        if not record.queue:
            return None
        with translated():
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.zrank(QUEUED_PREFIX + record.queue, record.id)
                pipe.zcard(RUNNING_PREFIX + record.queue)
                pipe.lrange(RUNS_PREFIX + record.kind, 0, scripts.RUNS_KEPT - 1)
                pipe.hvals(WORKERS)
                rank, running, runs, workers = await pipe.execute()
        if rank is None:
            return None
        consumers = sum(
            info.concurrency
            for info in (WorkerInfo.model_validate_json(codec.decode(raw)) for raw in workers)
            if record.queue in info.queues and heartbeat_fresh(info)
        )
        return QueueStanding(
            position=int(rank),
            running=int(running),
            consumers=consumers,
            run_times_s=[float(codec.decode(r)) for r in runs],
        )

    async def workers(self) -> list[WorkerInfo]:
        with translated():
            raws = await self._r.hvals(WORKERS)
        found = [WorkerInfo.model_validate_json(codec.decode(raw)) for raw in raws]
        return sorted((w for w in found if heartbeat_fresh(w)), key=lambda w: w.name)

    async def claim_key(
        self, key: str, fingerprint: str, task_id: str, ttl_s: int
    ) -> tuple[str, str] | None:
        name = IDEMPOTENCY_PREFIX + key
        with translated():
            if await self._r.set(name, f"{task_id} {fingerprint}", nx=True, ex=ttl_s):
                return None
            bound = await self._r.get(name)
        if bound is None:  # expired between the two calls: try once more
            return await self.claim_key(key, fingerprint, task_id, ttl_s)
        bound_id, _, bound_print = codec.decode(bound).partition(" ")
        return bound_id, bound_print

    async def release_key(self, key: str) -> None:
        with translated():
            await self._r.delete(IDEMPOTENCY_PREFIX + key)

    async def ping(self) -> None:
        with translated():
            await self._r.ping()

    async def durability(self) -> StoreDurability:
        with translated():
            try:
                async with self._r.pipeline(transaction=False) as pipe:
                    for name in persistence.PARAMETERS:
                        pipe.config_get(name)
                    replies = await pipe.execute()
            except ResponseError:  # CONFIG renamed away or forbidden by an ACL
                return persistence.undisclosed()
        return persistence.report({k: v for reply in replies for k, v in reply.items()})

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
