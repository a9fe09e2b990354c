"""The dead-letter queue's entry: a task that killed its worker on every attempt.

It is kept in the task store (a table on SQLite, a hash per entry on Redis), not in the
broker, so both engines hold it alike and it can be listed without consuming anything.
It carries what a replay needs (kind, input, callback, owner) because the task record
itself does not hold the input, and the record expires with the other results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from asyncml.records import Callback, ErrorBody

# Kept this long, or until purged or replayed: long enough for an operator to notice.
DEAD_LETTER_TTL_S = 14 * 24 * 3600


class DeadLetter(BaseModel):
    task_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    error: ErrorBody
    dead_at: datetime
    callback: Callback | None = None
    owner: str | None = None
