"""The task record: what the API answers about a task, written by the API and the workers."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class TaskStatus(StrEnum):
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED})


class ErrorBody(BaseModel):
    """``{type, message}``; a ``worker_lost`` failure adds ``attempts`` (omitted elsewhere)."""

    type: str
    message: str
    attempts: int | None = Field(default=None, exclude_if=lambda value: value is None)


# What a task announces, in its event stream and (those a callback names) as webhooks.
EventType = Literal["queued", "started", "progress", "log", "output", "completed"]
# The events a callback may ask for: every event but ``queued`` (an API-side view).
Event = Literal["started", "progress", "log", "output", "completed"]
INTERMEDIATE_EVENTS: frozenset[str] = frozenset({"progress", "log", "output"})


class Callback(BaseModel):
    """Where to POST a signed notice of this task's events."""

    url: str
    events: list[Event] = Field(default_factory=lambda: list[Event](["completed"]))


class Delivery(BaseModel):
    """How the notice of one event fared: pending while retries remain."""

    state: Literal["pending", "delivered", "failed"]
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    updated_at: datetime | None = None


class TaskRecord(BaseModel):
    id: str
    kind: str
    status: TaskStatus
    result: Any = None
    error: ErrorBody | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    callback: Callback | None = None
    deliveries: dict[str, Delivery] = Field(default_factory=dict)
    # While QUEUED, where it stands: tasks of its queue that start before it (0: next),
    # and the seconds until it finishes, estimated from measured run times (None until
    # enough is measured). Filled in by the API on reads; never stored.
    position: int | None = Field(default=None, exclude_if=lambda value: value is None)
    eta_s: float | None = Field(default=None, exclude_if=lambda value: value is None)
    # Who submitted it: the id of the API key ("" without keys). Never in API answers.
    owner: str = Field(default="", exclude=True)
    # The queue its kind runs on (kept for its queue position). Never in API answers.
    queue: str = Field(default="", exclude=True)
    # The input as submitted (JSON, cut at store.history.INPUT_KEPT_CHARS), kept for the
    # dashboard; written at create, read on its own (store.task_input). Never in API answers.
    input_json: str | None = Field(default=None, exclude=True)

    @property
    def final(self) -> bool:
        return self.status.final


class TaskEvent(BaseModel):
    """One thing a task announced. ``id`` is given by the store: increasing within a task,
    opaque (a Redis stream id, a SQLite row number), and what ``Last-Event-ID`` resumes
    after. ``data`` by type: queued {position, ahead, eta_s}; started {worker, attempt};
    progress {done, total, message}; log {level, message}; output {partial};
    completed {task} (the final record)."""

    id: str = ""
    task_id: str
    type: EventType
    at: datetime
    data: dict[str, Any] = Field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        """The JSON an event stream or a webhook carries."""
        return {
            "task_id": self.task_id,
            "id": self.id,
            "type": self.type,
            "at": self.at.isoformat(),
            **self.data,
        }


class QueueStanding(BaseModel):
    """What the store knows of a queued task's place: enough to say its position and ETA."""

    position: int  # QUEUED tasks of its queue submitted before it
    running: int  # tasks of its queue STARTED now
    consumers: int  # worker slots consuming its queue (from heartbeats); 0 if unknown
    run_times_s: list[float] = Field(default_factory=list)  # recent run times of its kind

    def eta_s(self) -> float | None:
        """Median run time x work ahead / consumers, plus its own run; None until at least
        three runs are measured or no worker is known."""
        if len(self.run_times_s) < 3 or self.consumers <= 0:
            return None
        ordered = sorted(self.run_times_s)
        median = ordered[len(ordered) // 2]
        return round(median * (self.position + self.running) / self.consumers + median, 3)


class WorkerInfo(BaseModel):
    """A worker's heartbeat, as kept in the store."""

    name: str
    queues: list[str]
    concurrency: int
    pool: str = ""
    pid: int = 0
    seen_at: datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


class ApiKey(BaseModel):
    """An API key as stored: its SHA-256 digest, never the key itself.

    Keys are 32 random bytes, so a fast hash is enough (there is nothing to brute-force);
    ``key_id`` (the digest's head) names the owner of the key's tasks.
    """

    name: str
    digest: str
    created_at: datetime
    rate: str | None = None
    max_unfinished: int | None = None
    # May see every task, the workers and the dead letters in the dashboard.
    operator: bool = False

    @property
    def key_id(self) -> str:
        return self.digest[:16]


class TaskPage(BaseModel):
    """One page of a caller's tasks, newest first; ``next_cursor`` fetches the next."""

    tasks: list[TaskRecord]
    next_cursor: str | None = None
