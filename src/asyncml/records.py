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


Event = Literal["started", "completed"]


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
    # Who submitted it: the id of the API key ("" without keys). Never in API answers.
    owner: str = Field(default="", exclude=True)

    @property
    def final(self) -> bool:
        return self.status.final


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

    @property
    def key_id(self) -> str:
        return self.digest[:16]


class TaskPage(BaseModel):
    """One page of a caller's tasks, newest first; ``next_cursor`` fetches the next."""

    tasks: list[TaskRecord]
    next_cursor: str | None = None
