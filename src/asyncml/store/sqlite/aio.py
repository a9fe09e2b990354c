"""The API's side of the embedded store: the sync store's calls in worker threads, a
group commit for submissions, and a long-poll by watching: SQLite has no cross-process
notification, so one watcher per API process asks which awaited tasks are final (one query
for all of them) when the store's doorbell rings (a worker committed a state change or an
event: doorbell.TASKS), and once a second in case a ring went missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import datetime

import anyio.to_thread

from asyncml.errors import ServiceUnavailable
from asyncml.records import (
    ApiKey,
    QueueStanding,
    TaskEvent,
    TaskPage,
    TaskRecord,
    TaskStatus,
    WorkerInfo,
)
from asyncml.store.base import EVENTS_KEPT, Cancelled
from asyncml.store.durability import StoreDurability
from asyncml.store.notices import EventWatch, FinishNotices
from asyncml.store.sqlite.doorbell import ABSTRACT, DEFAULT_FALLBACK_POLL_S, TASKS, Doorbell
from asyncml.store.sqlite.history import AsyncHistoryMixin
from asyncml.store.sqlite.sync import SqliteTaskStore

# Where no doorbell rings (no abstract sockets: not Linux), the watcher polls as it did.
_FALLBACK_S = DEFAULT_FALLBACK_POLL_S if ABSTRACT else 0.01


class AsyncSqliteTaskStore(AsyncHistoryMixin):
    """The API's side: each call runs in a worker thread so the event loop never blocks."""

    def __init__(self, store: SqliteTaskStore) -> None:
        self._store = store
        self._notices = FinishNotices()
        self._watch_events = EventWatch()
        # What the watcher's last look found of the awaited tasks (None: gone): a woken
        # long-poll answers with it instead of reading its record again.
        self._finals: dict[str, TaskRecord | None] = {}
        self._event_seq = -1  # the newest event the watcher has seen (-1: not read yet)
        self._watcher: asyncio.Task[None] | None = None
        self._bell: Doorbell | None = None  # bound on the first watch, kept after
        self._creates: list[tuple[TaskRecord, int, asyncio.Future[bool]]] = []
        self._committing: asyncio.Task[None] | None = None

    async def create(self, record: TaskRecord, *, max_open: int = 0) -> bool:
        """Submissions that arrive while a commit is under way go together in the next one:
        its write turn and its sync (~4 ms, after the turn: wal_flush.py) are paid once for
        all of them, and a lone submission is committed at once, as before."""
        made: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._creates.append((record, max_open, made))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.get_running_loop().create_task(self._commit_creates())
        return await asyncio.shield(made)  # a cancelled request leaves the batch whole

    async def _commit_creates(self) -> None:
        while self._creates:
            batch, self._creates = self._creates, []
            try:
                made = await anyio.to_thread.run_sync(
                    self._store.create_many, [(record, cap) for record, cap, _ in batch]
                )
            except Exception as exc:  # the batch's error is each of its submissions' error
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), one in zip(batch, made, strict=True):
                if not future.done():
                    future.set_result(one)

    async def list_tasks(
        self,
        owner: str,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        return await anyio.to_thread.run_sync(
            functools.partial(
                self._store.list_tasks, owner, status=status, kind=kind, limit=limit, cursor=cursor
            )
        )

    async def key_get(self, digest: str) -> ApiKey | None:
        return await anyio.to_thread.run_sync(self._store.key_get, digest)

    async def get(self, task_id: str) -> TaskRecord | None:
        return await anyio.to_thread.run_sync(self._store.get, task_id)

    async def delete(self, task_id: str) -> None:
        await anyio.to_thread.run_sync(self._store.delete, task_id)

    async def cancel(self, task_id: str, at: datetime) -> Cancelled:
        return await anyio.to_thread.run_sync(self._store.cancel, task_id, at)

    async def wait(
        self, task_id: str, timeout_s: float, *, owner: str | None = None
    ) -> TaskRecord | None:
        """SQLite cannot notify across processes, so one watcher per API process asks, when
        rung (see the module's docstring), which of the awaited tasks are final (one query
        for all of them), and wakes their requests."""
        deadline = time.monotonic() + timeout_s
        with self._notices.registered(task_id) as notice:
            record = await self.get(task_id)
            if record is None or record.final or timeout_s <= 0:
                return record
            if owner is not None and record.owner != owner:
                return record
            self._ensure_watcher()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(notice), deadline - time.monotonic())
            if notice.done() and task_id in self._finals:
                return self._finals[task_id]
            return await self.get(task_id)

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Listens only while someone waits: with nobody waiting, a worker's ring finds no
        one to send to. It listens before its first look, so no ring after it is missed; the
        rings that come during a look are read at once and make one more look."""
        if self._bell is None:
            self._bell = Doorbell(self._store.wake)
        bell, rung, loop = self._bell, asyncio.Event(), asyncio.get_running_loop()

        def on_ring() -> None:
            bell.drain()
            rung.set()

        loop.add_reader(bell.fileno(), on_ring)
        bell.listen(TASKS)
        try:
            while self._notices or self._watch_events:
                rung.clear()
                await self._look()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rung.wait(), _FALLBACK_S)
                if not rung.is_set():
                    bell.renew()  # a cleaned data folder took the registration
        finally:
            self._finals = {}
            bell.forget(TASKS)
            loop.remove_reader(bell.fileno())

    async def _look(self) -> None:
        try:
            if self._notices:
                awaited = self._notices.awaited()
                # Replaced at each look, so it holds only what is awaited now; a request
                # woken by a look before it reads its record again.
                self._finals = await anyio.to_thread.run_sync(self._store.finals_among, awaited)
                self._notices.wake(self._finals)
            if self._watch_events:
                self._event_seq, tasks, queues = await anyio.to_thread.run_sync(
                    self._store.events_since, self._event_seq
                )
                self._watch_events.events.wake(tasks)
                self._watch_events.moves.wake(queues)
        except ServiceUnavailable:
            pass  # a locked or missing file: the requests time out as usual

    async def events_after(
        self, task_id: str, after: str | None, limit: int = EVENTS_KEPT
    ) -> list[TaskEvent]:
        return await anyio.to_thread.run_sync(self._store.events_after, task_id, after, limit)

    async def wait_events(
        self, task_id: str, after: str | None, timeout_s: float, *, queue: str | None = None
    ) -> list[TaskEvent]:
        """Registered before the read, so an event that lands in between wakes the wait
        (the watcher reports every event written after its watermark, read first)."""
        if self._event_seq < 0:
            self._event_seq = await anyio.to_thread.run_sync(self._store.last_event_seq)
        self._ensure_watcher()  # it first runs after the wait below has registered
        return await self._watch_events.wait(
            task_id, queue, timeout_s, lambda: self.events_after(task_id, after)
        )

    def watchers(self) -> int:
        return len(self._notices.awaited()) + len(self._watch_events)

    async def standing(self, record: TaskRecord) -> QueueStanding | None:
        return await anyio.to_thread.run_sync(self._store.standing, record)

    async def workers(self) -> list[WorkerInfo]:
        return await anyio.to_thread.run_sync(self._store.workers)

    async def claim_key(
        self, key: str, fingerprint: str, task_id: str, ttl_s: int
    ) -> tuple[str, str] | None:
        return await anyio.to_thread.run_sync(
            self._store.claim_key, key, fingerprint, task_id, ttl_s
        )

    async def release_key(self, key: str) -> None:
        await anyio.to_thread.run_sync(self._store.release_key, key)

    async def ping(self) -> None:
        await anyio.to_thread.run_sync(self._store.ping)

    async def durability(self) -> StoreDurability:
        return await anyio.to_thread.run_sync(self._store.durability)

    async def close(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()  # it lets go of the doorbell before the doorbell closes
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        self._store.close()
