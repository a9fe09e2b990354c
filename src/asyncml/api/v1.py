"""/v1 routes, generated from the registry: one submit route per declared kind.

No ``from __future__ import annotations`` here: FastAPI must see each kind's input model
as a real object in the generated endpoint's signature to validate and document it.
"""

import logging
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Header, Query, Response, status
from pydantic import BaseModel, Field, HttpUrl, create_model

from asyncml.api.deps import ERROR_RESPONSES, ServicesDep, require_json, strict
from asyncml.errors import ServiceUnavailable, TaskConflict, TaskNotFound
from asyncml.kinds import TaskKind
from asyncml.registry import Registry
from asyncml.store import Callback, TaskRecord, utcnow
from asyncml.store.records import Event
from asyncml.webhooks import notice

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0


class KindView(BaseModel):
    name: str
    queue: str
    description: str
    timeout_s: float
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    classic_path: str | None = None


def kind_view(kind: TaskKind[Any, Any]) -> KindView:
    return KindView(
        name=kind.name,
        queue=kind.queue,
        description=kind.description,
        timeout_s=kind.limits.timeout_s,
        input_schema=kind.input_model.model_json_schema(),
        output_schema=kind.output_model.model_json_schema(),
        classic_path=kind.classic.path if kind.classic else None,
    )


_OPTIONS = {"callback_url", "callback_events"}


def _request_model(kind: TaskKind[Any, Any]) -> type[BaseModel]:
    """The kind's input plus the route's options, documented in the OpenAPI schema."""
    clash = _OPTIONS & set(kind.input_model.model_fields)
    if clash:
        raise ValueError(f"{kind.name}: input fields {sorted(clash)} are reserved")
    model: type[BaseModel] = create_model(
        f"{kind.input_model.__name__}Request",
        __base__=strict(kind.input_model),
        callback_url=(
            HttpUrl | None,
            Field(None, description="POST a signed notice here (Standard Webhooks)."),
        ),
        callback_events=(
            list[Event],
            Field(
                default_factory=lambda: list[Event](["completed"]),
                description="Which events to notify: completed (default), started.",
                min_length=1,
            ),
        ),
    )
    return model


def _submit_route(router: APIRouter, kind: TaskKind[Any, Any]) -> None:
    request_model = _request_model(kind)

    async def submit(
        body: Annotated[request_model, Body()],  # type: ignore[valid-type]  # built per kind
        services: ServicesDep,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=255,
                description="Send the same key again (within 24 h, same body) to get the "
                "original task back instead of a second one.",
            ),
        ] = None,
    ) -> TaskRecord:
        url = body.callback_url  # type: ignore[attr-defined]  # added by _request_model
        events = body.callback_events  # type: ignore[attr-defined]  # likewise
        callback = None if url is None else Callback(url=str(url), events=sorted(set(events)))
        record, replayed = await services.submit(
            kind, body, exclude=_OPTIONS, callback=callback, idempotency_key=idempotency_key
        )
        response.headers["Location"] = f"/v1/tasks/{record.id}"
        if replayed:
            response.status_code = status.HTTP_200_OK
        return record

    router.add_api_route(
        f"/tasks/{kind.name}",
        submit,
        methods=["POST"],
        dependencies=[Depends(require_json)],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=TaskRecord,
        summary=f"Submit a {kind.name} task",
        description=kind.description,
        operation_id=f"submit_{kind.name.replace('.', '_')}",
        tags=[kind.family],
        openapi_extra={"x-asyncml-output": kind.output_model.model_json_schema()},
        responses={
            200: {"description": "Replay of an Idempotency-Key: the original task."},
            415: {"description": "The body is not sent as JSON."},
            422: {"description": "The input does not fit the kind's schema; nothing queued."},
            503: {"description": "The broker or result store is down; nothing queued."},
        },
    )


def build_router(registry: Registry) -> APIRouter:
    router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
    for kind in registry:
        _submit_route(router, kind)

    @router.post("/tasks/{kind}", status_code=202, tags=["tasks"], include_in_schema=False)
    async def submit_unknown(kind: str) -> None:
        registry.get(kind)  # raises UnknownKind (404) listing the known kinds

    @router.get("/tasks/{task_id}", response_model=TaskRecord, tags=["tasks"])
    async def get_task(
        task_id: str,
        services: ServicesDep,
        wait: Annotated[
            float,
            Query(ge=0, le=MAX_WAIT_S, description="Long-poll: seconds to wait for a final state"),
        ] = 0,
    ) -> TaskRecord:
        if wait > 0:
            record = await services.store.wait(task_id, wait)
        else:
            record = await services.store.get(task_id)
        if record is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return record

    @router.delete(
        "/tasks/{task_id}",
        response_model=TaskRecord,
        tags=["tasks"],
        responses={409: {"description": "The task has started or is already final."}},
    )
    async def cancel_task(task_id: str, services: ServicesDep) -> TaskRecord:
        """Cancel a task that has not started; it will not run, on any broker."""
        outcome = await services.store.cancel(task_id, utcnow())
        record = outcome.record
        if record is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        if not outcome.done:
            raise TaskConflict(
                f"task {task_id} is {record.status.value}; only a QUEUED task can be cancelled"
            )
        if record.callback is not None and "completed" in record.callback.events:
            body = notice(record, "completed")
            try:
                await anyio.to_thread.run_sync(
                    services.engine.publish_notice, task_id, "completed", body
                )
            except ServiceUnavailable:  # the cancel stands; only its notice is lost
                log.error("task %s cancelled, but its completed notice was not queued", task_id)
        return record

    @router.get("/kinds", response_model=list[KindView], tags=["kinds"])
    async def list_kinds() -> list[KindView]:
        return [kind_view(k) for k in registry]

    return router
