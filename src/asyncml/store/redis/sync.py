"""The sync side of the Redis store (workers, CLI): one hash per task, Lua compare-and-set."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import redis
from redis.exceptions import ResponseError

from asyncml.records import (
    ApiKey,
    Delivery,
    ErrorBody,
    TaskEvent,
    TaskRecord,
    TaskStatus,
    WorkerInfo,
)
from asyncml.store.base import Cancelled, FailedDelivery, failed_delivery
from asyncml.store.dead_letters import DEAD_LETTER_TTL_S, DeadLetter
from asyncml.store.durability import StoreDurability
from asyncml.store.redis import codec, persistence, scripts
from asyncml.store.redis.connection import client_options, sync_retry, translated
from asyncml.store.redis.scripts import (
    CACHE_PREFIX,
    DEAD_LETTERS,
    FAILED_DELIVERIES,
    KEY_NAMES,
    KEY_PREFIX,
    WORKERS,
)


class RedisTaskStore:
    def __init__(self, url: str, *, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._r = redis.Redis.from_url(url, **client_options(), retry=sync_retry())
        self._start = self._r.register_script(scripts.START)
        self._finish = self._r.register_script(scripts.FINISH)
        self._cancel = self._r.register_script(scripts.CANCEL)
        self._reserve = self._r.register_script(scripts.RESERVE)
        self._set_delivery = self._r.register_script(scripts.SET_DELIVERY)
        self._create = self._r.register_script(scripts.CREATE)
        self._delete = self._r.register_script(scripts.DELETE)
        self._add_events = self._r.register_script(scripts.ADD_EVENTS)

    def create(self, record: TaskRecord, *, max_open: int = 0) -> bool:
        keys, args = codec.create_call(record, self.ttl_s, max_open)
        with translated():
            return bool(self._create(keys=keys, args=args))

    def get(self, task_id: str) -> TaskRecord | None:
        with translated():
            return codec.parse(self._r.hgetall(codec.key(task_id)))

    def delete(self, task_id: str) -> None:
        with translated():
            self._delete(keys=[codec.key(task_id)])

    def start(self, task_id: str, at: datetime, *, worker: str = "") -> int:
        args: list[str | int] = [at.isoformat(), worker, self.ttl_s, repr(at.timestamp())]
        with translated():
            return int(self._start(keys=[codec.key(task_id)], args=args))

    def finish(
        self,
        task_id: str,
        status: TaskStatus,
        at: datetime,
        *,
        result: Any = None,
        error: ErrorBody | None = None,
        run_s: float | None = None,
    ) -> bool:
        args = codec.finish_args(status, at, result, error, self.ttl_s, run_s)
        with translated():
            return bool(self._finish(keys=[codec.key(task_id), codec.channel(task_id)], args=args))

    def cancel(self, task_id: str, at: datetime) -> Cancelled:
        with translated():
            before = self._cancel(
                keys=[codec.key(task_id), codec.channel(task_id)], args=[at.isoformat(), self.ttl_s]
            )
        return Cancelled(self.get(task_id), done=before == b"QUEUED")

    def add_events(self, task_id: str, events: list[TaskEvent]) -> list[str]:
        """Append to the task's stream while it is not final; the ids the stream gave."""
        if not events:
            return []
        with translated():
            added = self._add_events(
                keys=[codec.key(task_id)], args=codec.event_args(events, self.ttl_s)
            )
        return codec.names(added or [])

    def heartbeat(self, worker: WorkerInfo) -> None:
        with translated():
            self._r.hset(WORKERS, worker.name, worker.model_dump_json())

    def worker_gone(self, name: str) -> None:
        with translated():
            self._r.hdel(WORKERS, name)

    def set_delivery(self, task_id: str, event: str, delivery: Delivery) -> None:
        field = codec.DELIVERY_PREFIX + event
        args: list[str | int] = [
            field,
            delivery.model_dump_json(),
            delivery.state,
            f"{task_id} {event}",
            repr(time.time()),
            self.ttl_s,
        ]
        with translated():
            self._set_delivery(keys=[codec.key(task_id), FAILED_DELIVERIES], args=args)

    def failed_deliveries(self, limit: int = 100) -> list[FailedDelivery]:
        """Newest first; those whose task expired are dropped on the way."""
        with translated():
            members = self._r.zrevrange(FAILED_DELIVERIES, 0, limit - 1)
            found: list[FailedDelivery] = []
            for member in codec.names(members):
                task_id, _, event = member.partition(" ")
                record = codec.parse(self._r.hgetall(codec.key(task_id)))
                delivery = None if record is None else record.deliveries.get(event)
                if record is None or delivery is None or delivery.state != "failed":
                    self._r.zrem(FAILED_DELIVERIES, member)
                    continue
                found.append(failed_delivery(record, event, delivery))
        return found

    def cache_get(self, key: str) -> str | None:
        with translated():
            value = self._r.get(CACHE_PREFIX + key)
        return None if value is None else codec.decode(value)

    def cache_set(self, key: str, value: str) -> None:
        with translated():
            self._r.set(CACHE_PREFIX + key, value)

    def key_add(self, key: ApiKey) -> bool:
        with translated():
            if not self._r.hsetnx(KEY_NAMES, key.name, key.digest):
                return False
            self._r.set(KEY_PREFIX + key.digest, key.model_dump_json())
        return True

    def key_get(self, digest: str) -> ApiKey | None:
        with translated():
            raw = self._r.get(KEY_PREFIX + digest)
        return None if raw is None else ApiKey.model_validate_json(codec.decode(raw))

    def key_list(self) -> list[ApiKey]:
        with translated():
            digests = codec.names(self._r.hvals(KEY_NAMES))
            raws = self._r.mget([KEY_PREFIX + d for d in digests]) if digests else []
        keys = [ApiKey.model_validate_json(codec.decode(raw)) for raw in raws if raw is not None]
        return sorted(keys, key=lambda k: k.name)

    def key_revoke(self, name: str) -> bool:
        with translated():
            digest = self._r.hget(KEY_NAMES, name)
            if digest is None:
                return False
            with self._r.pipeline() as pipe:  # MULTI: both go, or neither
                pipe.delete(KEY_PREFIX + codec.decode(digest))
                pipe.hdel(KEY_NAMES, name)
                pipe.execute()
        return True

    def reserve_slot(self, key: str, interval_s: float) -> float:
        with translated():
            wait_us = self._reserve(keys=[scripts.SLOT_PREFIX + key], args=[int(interval_s * 1e6)])
        return max(0.0, int(wait_us) / 1e6)

    def ping(self) -> None:
        with translated():
            self._r.ping()

    def durability(self) -> StoreDurability:
        with translated():
            try:
                with self._r.pipeline(transaction=False) as pipe:
                    for name in persistence.PARAMETERS:
                        pipe.config_get(name)
                    replies = pipe.execute()
            except ResponseError:  # CONFIG renamed away or forbidden by an ACL
                return persistence.undisclosed()
        return persistence.report({k: v for reply in replies for k, v in reply.items()})

    def close(self) -> None:
        self._r.close()

    # --- dead-letter queue: tasks that killed their worker on every attempt ---------
    # A hash per entry (expiring DEAD_LETTER_TTL_S after its dead_at) and one sorted set
    # of task ids by dead_at, trimmed of members whose hash has expired.

    def dead_letter_add(self, entry: DeadLetter) -> None:
        dead_at = entry.dead_at.timestamp()
        name = codec.dead_letter_key(entry.task_id)
        with translated(), self._r.pipeline() as pipe:  # MULTI/EXEC: hash and index together
            pipe.hset(name, mapping=codec.dead_letter_mapping(entry))
            pipe.expireat(name, int(dead_at + DEAD_LETTER_TTL_S))
            pipe.zadd(DEAD_LETTERS, {entry.task_id: dead_at})
            pipe.zremrangebyscore(DEAD_LETTERS, "-inf", time.time() - DEAD_LETTER_TTL_S)
            pipe.expire(DEAD_LETTERS, DEAD_LETTER_TTL_S)
            pipe.execute()

    def dead_letter_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        with translated():
            self._trim_dead_letters()
            ids = (
                codec.names(self._r.zrange(DEAD_LETTERS, offset, offset + limit - 1))
                if limit
                else []
            )
            with self._r.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hgetall(codec.dead_letter_key(task_id))
                raws = pipe.execute()
        return [entry for raw in raws if (entry := codec.parse_dead_letter(raw)) is not None]

    def dead_letter_count(self) -> int:
        with translated():
            self._trim_dead_letters()
            return int(self._r.zcard(DEAD_LETTERS))

    def dead_letter_get(self, task_id: str) -> DeadLetter | None:
        with translated():
            return codec.parse_dead_letter(self._r.hgetall(codec.dead_letter_key(task_id)))

    def dead_letter_remove(self, task_id: str) -> bool:
        with translated(), self._r.pipeline() as pipe:
            pipe.delete(codec.dead_letter_key(task_id))
            pipe.zrem(DEAD_LETTERS, task_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def dead_letter_purge(self) -> int:
        purged = 0
        with translated():
            while ids := codec.names(self._r.zrange(DEAD_LETTERS, 0, 499)):
                with self._r.pipeline() as pipe:
                    pipe.delete(*(codec.dead_letter_key(task_id) for task_id in ids))
                    pipe.zrem(DEAD_LETTERS, *ids)
                    deleted, _ = pipe.execute()
                purged += int(deleted)
        return purged

    def _trim_dead_letters(self) -> None:
        """Drop index members whose hash has expired (the hash expires on its own)."""
        self._r.zremrangebyscore(DEAD_LETTERS, "-inf", time.time() - DEAD_LETTER_TTL_S)
