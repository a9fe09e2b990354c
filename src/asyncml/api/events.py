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
import time
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


QUEUED_EVERY_S = 0.5  # a queued task's standing is read at most this often (when it moves)


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
    every registration it holds is released on the way out.

    While the task is queued, its standing is read on connect and again only when its
    queue's order moves (a task of it starts or leaves), at most every ``QUEUED_EVERY_S``:
    an idle stream costs no reads at all."""
    global _open_streams
    _open_streams += 1
    try:
        queued = record.status is TaskStatus.QUEUED
        last_sent: tuple[int, int, float | None] | None = None
        stale = queued  # the standing must be read (again)
        read_at = -float("inf")
        while True:
            now = time.monotonic()
            if queued and stale and now - read_at >= QUEUED_EVERY_S:
                read_at, stale = now, False
                standing = await store.standing(record)
                if standing is None:  # left its queue: its event says how, next pass
                    current = await store.get(record.id)
                    if current is None:
                        return
                    queued = current.status is TaskStatus.QUEUED
                else:
                    view = (standing.position, standing.running, standing.eta_s())
                    if view != last_sent:
                        last_sent = view
                        yield _sse(_queued_event(record.id, after, standing), with_id=False)
            if queued and stale:  # moved again too soon: look once the interval is over
                wait_s = max(0.0, read_at + QUEUED_EVERY_S - time.monotonic())
            else:
                wait_s = KEEPALIVE_S
            events = await store.wait_events(
                record.id, after, wait_s, queue=record.queue if queued else None
            )
            if queued and not events:
                stale = True  # woken by its queue moving (or by the timeout): read again
            for event in events:
                after = event.id
                if event.type == "completed":
                    yield await _completed(store, event)
                    return
                if event.type == "started":
                    queued = False
                yield _sse(event)
    finally:
        _open_streams -= 1


def _queued_event(task_id: str, after: str | None, standing: QueueStanding) -> TaskEvent:
    return TaskEvent(
        id=after or "0",
        task_id=task_id,
        type="queued",
        at=utcnow(),
        data={
            "position": standing.position,
            "ahead": standing.position + standing.running,
            "eta_s": standing.eta_s(),
        },
    )


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
