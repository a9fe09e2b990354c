"""The Redis store's side of the dashboard's history (see ``store/history.py``).

Indexes, kept by the state-change scripts themselves (``history_lua.LUA`` is prepended to
them in ``scripts.py``), so they cost no round trip of their own:

- ``asyncml:hist:all`` and ``asyncml:hist:kind:<kind>``: every task by submit time (the
  owner's own index is ``asyncml:owner:<owner>``); trimmed past twice the result TTL, and
  ids whose record expired are dropped as a listing meets them.
- ``asyncml:hist:finished``: one short member per final task, scored by finish time:
  ``id|status|kind|wait_s|run_s|error type|finished_at``. The last hour's charts read a score range
  and never touch the records.
- the record's ``submitted_ts`` and ``started_ts`` fields (epoch seconds), which let the
  finish script say how long the task waited and ran.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from asyncml.records import TaskPage, TaskStatus
from asyncml.store.history import FinishedTask, parse_summary
from asyncml.store.redis import codec
from asyncml.store.redis.connection import translated
from asyncml.store.redis.history_lua import ALL, FINISHED, KIND_PREFIX, QUEUED_PREFIX


class _Walks(Protocol):
    _r: Any

    async def _walk(
        self,
        index: str,
        *,
        status: TaskStatus | None,
        kind: str | None,
        since: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> TaskPage: ...


class HistoryMixin:
    """For ``AsyncRedisTaskStore``: reads only; the scripts write."""

    async def list_all(
        self: _Walks,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        index = ALL if kind is None else KIND_PREFIX + kind
        return await self._walk(
            index, status=status, kind=kind, since=since, limit=limit, cursor=cursor
        )

    async def finished_since(self: _Walks, since: datetime) -> list[FinishedTask]:
        # Members carry their finish time: read without scores, half the replies to parse.
        with translated():
            members = await self._r.zrangebyscore(FINISHED, since.timestamp(), "+inf")
        found = (parse_summary(codec.decode(member)) for member in members)
        return [task for task in found if task is not None]

    async def queue_depths(self: _Walks, queues: list[str]) -> dict[str, int]:
        with translated():
            async with self._r.pipeline(transaction=False) as pipe:
                for queue in queues:
                    pipe.zcard(QUEUED_PREFIX + queue)
                counts = await pipe.execute()
        return {queue: int(count) for queue, count in zip(queues, counts, strict=True)}

    async def task_input(self: _Walks, task_id: str) -> str | None:
        with translated():
            raw = await self._r.hget(codec.key(task_id), "input")
        return None if raw is None else codec.decode(raw)
