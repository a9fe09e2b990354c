"""What a task store must do. Two sides: the sync one (workers, CLI) and the async one (API).

State moves only forward, and every move is one atomic compare-and-set in the store, so a
cancel racing a worker's start has exactly one winner on every backend::

    QUEUED ──start──> STARTED ──finish──> SUCCESS | FAILURE
       └─────cancel──> CANCELLED
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from asyncml.store.records import Delivery, ErrorBody, TaskRecord, TaskStatus


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: ``done`` only if this call moved the task from QUEUED."""

    record: TaskRecord | None
    done: bool


class TaskStore(Protocol):
    def create(self, record: TaskRecord) -> None: ...

    def get(self, task_id: str) -> TaskRecord | None: ...

    def delete(self, task_id: str) -> None: ...

    def start(self, task_id: str, at: datetime) -> int:
        """QUEUED or STARTED (a redelivery) -> STARTED; returns this attempt's number.

        0 means: do not run it (cancelled, final or unknown).
        """
        ...

    def finish(
        self,
        task_id: str,
        status: TaskStatus,
        at: datetime,
        *,
        result: Any = None,
        error: ErrorBody | None = None,
    ) -> bool: ...

    def cancel(self, task_id: str, at: datetime) -> Cancelled:
        """QUEUED -> CANCELLED."""
        ...

    def set_delivery(self, task_id: str, event: str, delivery: Delivery) -> None:
        """Record how the webhook notice of ``event`` fared (only the delivery task writes)."""
        ...

    def cache_get(self, key: str) -> str | None:
        """A value kept by ``cache_set``; for results that never change (a past draw)."""
        ...

    def cache_set(self, key: str, value: str) -> None: ...

    def reserve_slot(self, key: str, interval_s: float) -> float:
        """Book the next free slot of a shared schedule; seconds to wait until it.

        Slots are ``interval_s`` apart across every process using this store, which is
        how "at most N requests per second to a source, across all workers" holds.
        """
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


class AsyncTaskStore(Protocol):
    async def create(self, record: TaskRecord) -> None: ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def delete(self, task_id: str) -> None: ...

    async def cancel(self, task_id: str, at: datetime) -> Cancelled: ...

    async def wait(self, task_id: str, timeout_s: float) -> TaskRecord | None:
        """Return once the task is final or ``timeout_s`` passed, whichever is first."""
        ...

    async def claim_key(
        self, key: str, fingerprint: str, task_id: str, ttl_s: int
    ) -> tuple[str, str] | None:
        """Bind an idempotency key to a task, atomically; if the key is already bound (and
        not expired), change nothing and return its (task id, fingerprint)."""
        ...

    async def release_key(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
