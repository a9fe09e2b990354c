"""``GET /v1/tasks/{id}/events``: a task's events as Server-Sent Events, live.

The stream sends the stored events after ``Last-Event-ID`` (all of them on a first
connect), then each new one as the store announces it, and ends after ``completed``, which
carries the final record. ``queued`` events are not stored: they say where the task
stands now, on connect and whenever that changes (at most twice a second); they carry the
id of the last stored event in their data and no SSE ``id:`` line, so a resume never skips
a stored event. A comment every 15 s keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from sse_starlette import EventSourceResponse

from asyncml.api.deps import CallerDep, ServicesDep, authenticate
from asyncml.api.schema import ERROR_RESPONSES
from asyncml.auth import owned_task
from asyncml.records import QueueStanding, TaskEvent, TaskRecord, TaskStatus, utcnow
from asyncml.store import AsyncTaskStore

KEEPALIVE_S = 15
_open_streams = 0  # in this process: the /metrics gauge asyncml_event_streams_open


def open_streams() -> int:
    return _open_streams


QUEUED_EVERY_S = 0.5  # how often a queued task's standing is read (and sent if changed)


def with_standing(record: TaskRecord, standing: QueueStanding | None) -> TaskRecord:
    """The record with its queue position and ETA while QUEUED (never stored)."""
    if standing is None or record.status is not TaskStatus.QUEUED:
        return record
    return record.model_copy(update={"position": standing.position, "eta_s": standing.eta_s()})


def _sse(event: TaskEvent, *, with_id: bool = True) -> dict[str, Any]:
    return {
        "event": event.type,
        "id": event.id if with_id else None,
        "data": json.dumps(event.wire(), separators=(",", ":"), default=str),
    }


async def _completed(store: AsyncTaskStore, event: TaskEvent) -> dict[str, Any]:
    record = await store.get(event.task_id)
    task = None if record is None else record.model_dump(mode="json")
    return _sse(event.model_copy(update={"data": {"task": task}}))


async def task_events(
    store: AsyncTaskStore, record: TaskRecord, after: str | None
) -> AsyncIterator[dict[str, Any]]:
    """The stream's messages; ends after ``completed``. Cancelled when the client goes:
    every registration it holds is released on the way out."""
    global _open_streams
    _open_streams += 1
    try:
        queued = record.status is TaskStatus.QUEUED
        last_standing: tuple[int, int, float | None] | None = None
        while True:
            if queued:
                standing = await store.standing(record)
                if standing is not None:
                    now = (standing.position, standing.running, standing.eta_s())
                    if now != last_standing:
                        last_standing = now
                        event = TaskEvent(
                            id=after or "0",
                            task_id=record.id,
                            type="queued",
                            at=utcnow(),
                            data={
                                "position": standing.position,
                                "ahead": standing.position + standing.running,
                                "eta_s": standing.eta_s(),
                            },
                        )
                        yield _sse(event, with_id=False)
            wait_s = QUEUED_EVERY_S if queued else KEEPALIVE_S
            for event in await store.wait_events(record.id, after, wait_s):
                after = event.id
                if event.type == "completed":
                    yield await _completed(store, event)
                    return
                if event.type == "started":
                    queued = False
                yield _sse(event)
            if queued and last_standing is not None:
                # Not started, yet gone from its queue: cancelled (its completed event is
                # read on the next pass) or its record expired.
                current = await store.get(record.id)
                if current is None:
                    return
                queued = current.status is TaskStatus.QUEUED
    finally:
        _open_streams -= 1


def build_router() -> APIRouter:
    router = APIRouter(
        prefix="/v1", responses=ERROR_RESPONSES, dependencies=[Depends(authenticate)]
    )

    @router.get(
        "/tasks/{task_id}/events",
        tags=["tasks"],
        response_class=EventSourceResponse,
        responses={
            200: {
                "description": "text/event-stream: queued, started, progress, log, output, "
                "then completed (the final record), after which the stream ends.",
                "content": {"text/event-stream": {}},
            }
        },
    )
    async def stream_events(
        task_id: str,
        services: ServicesDep,
        caller: CallerDep,
        last_event_id: Annotated[
            str | None,
            Header(max_length=100, description="Resume after this event (sent by browsers)."),
        ] = None,
    ) -> EventSourceResponse:
        """The task's events as they happen (Server-Sent Events); another key's task is a
        404, as everywhere."""
        record = await owned_task(services.store, task_id, caller)
        return EventSourceResponse(
            task_events(services.store, record, last_event_id),
            ping=KEEPALIVE_S,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
