"""The task record: what the API answers about a task, written by the API and the workers."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


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
    type: str
    message: str


class TaskRecord(BaseModel):
    id: str
    kind: str
    status: TaskStatus
    result: Any = None
    error: ErrorBody | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.status.final


def utcnow() -> datetime:
    return datetime.now(UTC)
