"""How records, cursors and dead letters are written to and read from Redis values.

Both stores (sync and async) read the same hashes, so the encoding has one home.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from asyncml.errors import InputInvalid
from asyncml.records import Callback, Delivery, ErrorBody, TaskEvent, TaskRecord, TaskStatus
from asyncml.store.dead_letters import DeadLetter
from asyncml.store.redis.scripts import (
    CHANNEL_PREFIX,
    DEAD_LETTER_PREFIX,
    EVENTS_PREFIX,
    OPEN_PREFIX,
    OWNER_PREFIX,
    PREFIX,
)

# A record's hash holds one field per webhook event: "delivery:<event>" -> Delivery JSON.
DELIVERY_PREFIX = "delivery:"


def key(task_id: str) -> str:
    return PREFIX + task_id


def channel(task_id: str) -> str:
    return CHANNEL_PREFIX + task_id


def dead_letter_key(task_id: str) -> str:
    return DEAD_LETTER_PREFIX + task_id


def decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def names(members: Any) -> list[str]:
    return [decode(m) for m in members]


def _mapping(record: TaskRecord) -> Mapping[Any, Any]:
    mapping = {
        "id": record.id,
        "kind": record.kind,
        "status": record.status.value,
        "submitted_at": record.submitted_at.isoformat(),
    }
    if record.callback is not None:
        mapping["callback"] = record.callback.model_dump_json()
    mapping["owner"] = record.owner
    if record.queue:
        mapping["queue"] = record.queue
    if record.input_json is not None:
        mapping["input"] = record.input_json  # read on its own (history.task_input)
    return mapping


def create_call(record: TaskRecord, ttl_s: int, max_open: int) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the CREATE script for ``record``."""
    keys = [key(record.id), OWNER_PREFIX + record.owner, OPEN_PREFIX + record.owner]
    args: list[Any] = [ttl_s, repr(record.submitted_at.timestamp()), record.id, max_open]
    for field, value in _mapping(record).items():
        args += [field, value]
    return keys, args


def finish_args(
    status: TaskStatus,
    at: datetime,
    result: Any,
    error: ErrorBody | None,
    ttl_s: int,
    run_s: float | None = None,
) -> list[Any]:
    """ARGV of the FINISH script; '' stands for "no value" (Lua sees no nil in ARGV)."""
    return [
        status.value,
        at.isoformat(),
        "" if result is None else json.dumps(result),
        "" if error is None else error.model_dump_json(),
        ttl_s,
        "" if run_s is None else repr(round(run_s, 6)),
    ]


def events_key(task_id: str) -> str:
    return EVENTS_PREFIX + task_id


def event_args(events: list[TaskEvent], ttl_s: int) -> list[Any]:
    """ARGV of ADD_EVENTS: the ttl, then (type, at, data) per event."""
    args: list[Any] = [ttl_s]
    for one in events:
        args += [one.type, one.at.isoformat(), json.dumps(one.data, separators=(",", ":"))]
    return args


def parse_events(task_id: str, entries: Any) -> list[TaskEvent]:
    """XRANGE's (id, fields) pairs as events; the stream id is the event's id."""
    parsed = []
    for entry_id, raw in entries:
        fields = {decode(k): decode(v) for k, v in raw.items()}
        parsed.append(
            TaskEvent(
                id=decode(entry_id),
                task_id=task_id,
                type=fields["type"],
                at=datetime.fromisoformat(fields["at"]),
                data=json.loads(fields.get("data") or "{}"),
            )
        )
    return parsed


def parse(raw: Mapping[Any, Any]) -> TaskRecord | None:
    if not raw:
        return None
    fields = {k.decode(): v.decode() for k, v in raw.items()}

    def when(name: str) -> datetime | None:
        return datetime.fromisoformat(fields[name]) if name in fields else None

    return TaskRecord(
        id=fields["id"],
        kind=fields["kind"],
        status=TaskStatus(fields["status"]),
        result=json.loads(fields["result"]) if "result" in fields else None,
        error=ErrorBody.model_validate_json(fields["error"]) if "error" in fields else None,
        submitted_at=datetime.fromisoformat(fields["submitted_at"]),
        started_at=when("started_at"),
        finished_at=when("finished_at"),
        callback=Callback.model_validate_json(fields["callback"]) if "callback" in fields else None,
        owner=fields.get("owner", ""),
        queue=fields.get("queue", ""),
        deliveries={
            name.removeprefix(DELIVERY_PREFIX): Delivery.model_validate_json(value)
            for name, value in fields.items()
            if name.startswith(DELIVERY_PREFIX)
        },
    )


def parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    """A list cursor is ``s<score>:<task id>``: the last index entry a page returned."""
    if cursor is None:
        return None
    score, sep, task_id = cursor.removeprefix("s").partition(":")
    try:
        if not (cursor.startswith("s") and sep and task_id):
            raise ValueError(cursor)
        return float(score), task_id
    except ValueError:
        raise InputInvalid("cursor: not a cursor this server gave out") from None


def format_cursor(score: float, task_id: str) -> str:
    return f"s{score!r}:{task_id}"


def dead_letter_mapping(entry: DeadLetter) -> Mapping[Any, Any]:
    """One field per top-level value, JSON-encoded: readable with redis-cli HGETALL."""
    return {
        name: json.dumps(value)
        for name, value in entry.model_dump(mode="json").items()
        if value is not None
    }


def parse_dead_letter(raw: Mapping[Any, Any]) -> DeadLetter | None:
    if not raw:
        return None
    return DeadLetter.model_validate({k.decode(): json.loads(v) for k, v in raw.items()})
