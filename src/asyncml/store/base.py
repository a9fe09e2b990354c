"""What a task store must do. Two sides: the sync one (workers, CLI) and the async one (API).

State moves only forward, and every move is one atomic compare-and-set in the store, so a
cancel racing a worker's start has exactly one winner on every backend::

    QUEUED ──start──> STARTED ──finish──> SUCCESS | FAILURE
       └─────cancel──> CANCELLED

Each move also appends the task's event (``started`` per attempt, ``completed`` at the
end) and keeps the queue's index of QUEUED and STARTED tasks, in the same atomic step: a
task's events cost no store round trip of their own unless the task reports progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from asyncml.records import (
    ApiKey,
    Delivery,
    ErrorBody,
    QueueStanding,
    TaskEvent,
    TaskPage,
    TaskRecord,
    TaskStatus,
    WorkerInfo,
    utcnow,
)
from asyncml.store.dead_letters import DeadLetter
from asyncml.store.durability import StoreDurability
from asyncml.store.history import FinishedTask

EVENTS_KEPT = 1000  # per task; older events are dropped
HEARTBEAT_S = 5.0  # how often a worker says it is alive


def heartbeat_fresh(worker: WorkerInfo) -> bool:
    """Seen within three heartbeats: alive, as far as anyone can tell."""
    return (utcnow() - worker.seen_at).total_seconds() <= 3 * HEARTBEAT_S


@dataclass(frozen=True)
class FailedDelivery:
    """A webhook notice that was given up on: its task, its event and how it fared."""

    task: TaskRecord
    event: str
    delivery: Delivery

    @property
    def failed_at(self) -> datetime | None:
        return self.delivery.updated_at


def failed_delivery(record: TaskRecord, event: str, delivery: Delivery) -> FailedDelivery:
    return FailedDelivery(task=record, event=event, delivery=delivery)


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: ``done`` only if this call moved the task from QUEUED."""

    record: TaskRecord | None
    done: bool


class TaskStore(Protocol):
    def create(self, record: TaskRecord, *, max_open: int = 0) -> bool:
        """Store a new QUEUED record; with ``max_open`` > 0, only if its owner has fewer
        unfinished tasks than that (checked and written in one atomic step)."""
        ...

    def get(self, task_id: str) -> TaskRecord | None: ...

    def delete(self, task_id: str) -> None: ...

    def start(self, task_id: str, at: datetime, *, worker: str = "") -> int:
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
        run_s: float | None = None,
    ) -> bool:
        """``run_s``: how long the task ran, kept per kind for queue ETAs."""
        ...

    def add_events(self, task_id: str, events: list[TaskEvent]) -> list[str]:
        """Append events while the task is not final; the ids the store gave them (none
        if it is final or gone). The last ``EVENTS_KEPT`` of a task are kept."""
        ...

    def heartbeat(self, worker: WorkerInfo) -> None:
        """Say that a worker is alive, with what it consumes (every ``HEARTBEAT_S``)."""
        ...

    def worker_gone(self, name: str) -> None: ...

    def cancel(self, task_id: str, at: datetime) -> Cancelled:
        """QUEUED -> CANCELLED."""
        ...

    def set_delivery(self, task_id: str, event: str, delivery: Delivery) -> None:
        """Record how the webhook notice of ``event`` fared (only the delivery task writes)."""
        ...

    def failed_deliveries(self, limit: int = 100) -> list[FailedDelivery]:
        """Webhook notices given up on (failed), newest first, of tasks still kept."""
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

    # API keys (``asyncml keys``): stored by digest; names are unique among live keys.
    def key_add(self, key: ApiKey) -> bool:
        """False (and nothing stored) if a key by that name exists."""
        ...

    def key_get(self, digest: str) -> ApiKey | None: ...

    def key_list(self) -> list[ApiKey]: ...

    def key_revoke(self, name: str) -> bool:
        """Delete the key of that name; False if there was none."""
        ...

    def ping(self) -> None: ...

    def durability(self) -> StoreDurability:
        """Whether an accepted task survives a crash of the store's server, as read from
        the server (see ``store/durability.py``)."""
        ...

    def close(self) -> None: ...

    # --- dead-letter queue: tasks that killed their worker on every attempt ---------

    def dead_letter_add(self, entry: DeadLetter) -> None:
        """Keep ``entry`` (replacing one of the same task id) for ``DEAD_LETTER_TTL_S``."""
        ...

    def dead_letter_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Entries oldest first; reading consumes nothing."""
        ...

    def dead_letter_count(self) -> int: ...

    def dead_letter_get(self, task_id: str) -> DeadLetter | None: ...

    def dead_letter_remove(self, task_id: str) -> bool:
        """True only for the one caller that removed it: a replay claims its entry so."""
        ...

    def dead_letter_purge(self) -> int:
        """Remove every entry; how many there were."""
        ...


class AsyncTaskStore(Protocol):
    async def create(self, record: TaskRecord, *, max_open: int = 0) -> bool:
        """Store a new QUEUED record; with ``max_open`` > 0, only if its owner has fewer
        unfinished tasks than that (checked and written in one atomic step)."""
        ...

    async def list_tasks(
        self,
        owner: str,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """The owner's tasks, newest first; ``cursor`` continues a previous page."""
        ...

    async def key_get(self, digest: str) -> ApiKey | None: ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def delete(self, task_id: str) -> None: ...

    async def cancel(self, task_id: str, at: datetime) -> Cancelled: ...

    async def wait(
        self, task_id: str, timeout_s: float, *, owner: str | None = None
    ) -> TaskRecord | None:
        """Return once the task is final or ``timeout_s`` passed, whichever is first. With
        ``owner``, another owner's record is returned at once, unwaited (its caller answers
        404): a long-poll reads the record once, not once to check and once to wait."""
        ...

    async def events_after(
        self, task_id: str, after: str | None, limit: int = EVENTS_KEPT
    ) -> list[TaskEvent]:
        """The task's stored events after the one of id ``after`` (all if None), oldest
        first; an id this store never gave out reads from the start."""
        ...

    async def wait_events(
        self, task_id: str, after: str | None, timeout_s: float, *, queue: str | None = None
    ) -> list[TaskEvent]:
        """As ``events_after``, but wait up to ``timeout_s`` for one if there is none, or,
        with ``queue``, until that queue's order moves (a task of it started or left it)."""
        ...

    async def standing(self, record: TaskRecord) -> QueueStanding | None:
        """Where a QUEUED task stands in its queue; None if it is not queued."""
        ...

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is fresh."""
        ...

    # --- the dashboard's history (store/history.py): from the store, never memory ---

    async def list_all(
        self,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """Every owner's tasks, newest first (an operator's view)."""
        ...

    async def finished_since(self, since: datetime) -> list[FinishedTask]:
        """Tasks that became final since ``since``, oldest first."""
        ...

    async def queue_depths(self, queues: list[str]) -> dict[str, int]:
        """QUEUED tasks per queue now."""
        ...

    async def task_input(self, task_id: str) -> str | None:
        """The input a task was submitted with (JSON, maybe cut); None if not kept."""
        ...

    def watchers(self) -> int:
        """Requests of this process waiting on a task (long-polls, event streams)."""
        ...

    async def claim_key(
        self, key: str, fingerprint: str, task_id: str, ttl_s: int
    ) -> tuple[str, str] | None:
        """Bind an idempotency key to a task, atomically; if the key is already bound (and
        not expired), change nothing and return its (task id, fingerprint)."""
        ...

    async def release_key(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def durability(self) -> StoreDurability: ...

    async def close(self) -> None: ...
