"""/v1 routes, generated from the registry: one submit route per declared kind.

No ``from __future__ import annotations`` here: FastAPI must see each kind's input model
as a real object in the generated endpoint's signature to validate and document it.
"""

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, create_model

from asyncml.api.deps import CallDep, CallerDep, ServicesDep, authenticate
from asyncml.api.events import with_standing
from asyncml.api.schema import (
    CALLBACK_FIELDS,
    ERROR_RESPONSES,
    CallbackFields,
    require_json,
    strict,
)
from asyncml.auth import owned_task
from asyncml.errors import InputInvalid
from asyncml.kinds import TaskKind
from asyncml.records import TaskPage
from asyncml.registry import Registry
from asyncml.settings import Settings
from asyncml.store import TaskRecord, TaskStatus

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0
MAX_PREFER_WAIT_S = 60.0
TaskId = Annotated[str, Path(min_length=1, max_length=100, description="A task's id")]
_PREFER = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)


def prefer_wait(header: str | None) -> float:
    """Seconds asked for by ``Prefer: wait=N`` (RFC 7240), capped at 60; 0 if absent."""
    if not header:
        return 0.0
    match = _PREFER.search(header)
    return min(MAX_PREFER_WAIT_S, float(match.group(1))) if match else 0.0


PreferHeader = Annotated[
    str | None,
    Header(
        max_length=200,
        description="`wait=N` (N <= 60): hold the answer until the task is final or N "
        "seconds pass: 200 with the finished task, else the usual 202.",
    ),
]


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


def _request_model(kind: TaskKind[Any, Any]) -> type[BaseModel]:
    """The kind's input plus the route's options, documented in the OpenAPI schema."""
    clash = CALLBACK_FIELDS & set(kind.input_model.model_fields)
    if clash:
        raise ValueError(f"{kind.name}: input fields {sorted(clash)} are reserved")
    model: type[BaseModel] = create_model(
        f"{kind.input_model.__name__}Request",
        __base__=(strict(kind.input_model), CallbackFields),
    )
    return model


def _submit_route(router: APIRouter, kind: TaskKind[Any, Any]) -> None:
    request_model = _request_model(kind)

    async def submit(
        body: Annotated[request_model, Body()],  # type: ignore[valid-type]  # built per kind
        call: CallDep,
        response: Response,
        prefer: PreferHeader = None,
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
        services = call.services
        submitted = await services.submitter.submit(
            kind,
            body,
            caller=call.caller,
            exclude=set(CALLBACK_FIELDS),
            callback=body.callback(),  # type: ignore[attr-defined]  # CallbackFields's
            idempotency_key=idempotency_key,
        )
        record = submitted.record
        response.headers["Location"] = f"/v1/tasks/{record.id}"
        wait_s = prefer_wait(prefer)
        if wait_s > 0:
            response.headers["Preference-Applied"] = f"wait={wait_s:g}"
            if not record.final:
                record = await services.store.wait(record.id, wait_s) or record
        if submitted.replayed or record.final:
            response.status_code = status.HTTP_200_OK
        return record

    router.add_api_route(
        f"/tasks/{kind.name}",
        submit,
        methods=["POST"],
        dependencies=[Depends(require_json)],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=TaskRecord,
        summary=f"Submit one {kind.name} task",
        description=kind.description,
        operation_id=f"submit_{kind.name.replace('.', '_')}",
        tags=[kind.family],
        openapi_extra={"x-asyncml-output": kind.output_model.model_json_schema()},
        responses={
            200: {
                "description": "Final within `Prefer: wait`, or the replay of an "
                "Idempotency-Key (the original task)."
            },
            415: {"description": "The body is not sent as JSON."},
            422: {"description": "The input does not fit the kind's schema; nothing queued."},
            503: {"description": "The broker or result store is down; nothing queued."},
        },
    )


class ListQuery(BaseModel):
    """Filters of GET /v1/tasks; an unknown one (a typo) is a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = Field(None, description="Only tasks in this state")
    kind: str | None = Field(None, max_length=100, description="Only tasks of this kind")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page")


class BatchAccepted(BaseModel):
    tasks: list[TaskRecord] = Field(description="One task per input, in the inputs' order.")


class _BatchOptions(CallbackFields):
    model_config = ConfigDict(extra="forbid")


def _batch_route(router: APIRouter, kind: TaskKind[Any, Any], settings: Settings) -> None:
    item: Any = strict(kind.input_model)
    batch_model: type[BaseModel] = create_model(
        f"{kind.input_model.__name__}Batch",
        __base__=_BatchOptions,
        inputs=(list[item], Field(min_length=1, max_length=settings.max_batch_size)),
    )

    async def submit_batch(
        body: Annotated[batch_model, Body()],
        services: ServicesDep,
        caller: CallerDep,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=200,
                description="Send the same key with the same batch again (within 24 h) to get "
                "the original tasks back instead of new ones.",
            ),
        ] = None,
    ) -> BatchAccepted:
        """All or nothing: if the broker fails part-way, the tasks this request queued are
        cancelled (they will not run) and the answer is 503."""
        submitted = await services.submitter.submit_batch(
            kind,
            body.inputs,  # type: ignore[attr-defined]  # a field of batch_model
            caller=caller,
            callback=body.callback(),
            idempotency_key=idempotency_key,
        )
        accepted = [one.record for one in submitted]
        if all(one.replayed for one in submitted):
            response.status_code = status.HTTP_200_OK  # a replay: nothing new was queued
        return BatchAccepted(tasks=accepted)

    router.add_api_route(
        f"/tasks/{kind.name}/batch",
        submit_batch,
        methods=["POST"],
        dependencies=[Depends(require_json)],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchAccepted,
        summary=f"Submit up to {settings.max_batch_size} {kind.name} tasks at once",
        operation_id=f"submit_batch_{kind.name.replace('.', '_')}",
        tags=[kind.family],
        responses={
            200: {"description": "Replay of an Idempotency-Key: the original tasks."},
            422: {"description": "An input does not fit (its index is in `errors`); none queued."},
        },
    )


def build_router(registry: Registry, settings: Settings) -> APIRouter:
    router = APIRouter(
        prefix="/v1", responses=ERROR_RESPONSES, dependencies=[Depends(authenticate)]
    )
    # The routes of one task come first: every poll is matched against the routes before
    # its own (each kind adds two), so the most frequent request is matched at once.
    _task_routes(router, registry)
    for kind in registry:
        _submit_route(router, kind)
        _batch_route(router, kind, settings)

    @router.post("/tasks/{kind}", status_code=202, tags=["tasks"], include_in_schema=False)
    async def submit_unknown(kind: str) -> None:
        registry.get(kind)  # raises UnknownKind (404) listing the known kinds

    @router.get("/kinds", response_model=list[KindView], tags=["kinds"])
    async def list_kinds() -> list[KindView]:
        return [kind_view(k) for k in registry]

    return router


def _task_routes(router: APIRouter, registry: Registry) -> None:
    """Reading, listing and cancelling tasks (none of these paths is a kind's)."""

    @router.get("/tasks", response_model=TaskPage, tags=["tasks"])
    async def list_tasks(
        services: ServicesDep, caller: CallerDep, query: Annotated[ListQuery, Query()]
    ) -> TaskPage:
        """The caller's own tasks, newest first (kept for ASYNCML_RESULT_TTL_S)."""
        if query.kind is not None and query.kind not in registry:
            raise InputInvalid(f"kind: unknown task kind {query.kind!r}")
        return await services.store.list_tasks(
            caller.owner,
            status=query.status,
            kind=query.kind,
            limit=query.limit,
            cursor=query.cursor,
        )

    @router.get("/tasks/{task_id}", response_model=TaskRecord, tags=["tasks"])
    async def get_task(
        task_id: TaskId,
        call: CallDep,
        wait: Annotated[
            float,
            Query(ge=0, le=MAX_WAIT_S, description="Long-poll: seconds to wait for a final state"),
        ] = 0,
    ) -> TaskRecord:
        store = call.services.store
        record = await owned_task(store, task_id, call.caller, wait_s=wait)
        if record.status is TaskStatus.QUEUED:
            record = with_standing(record, await store.standing(record))
        return record

    @router.delete(
        "/tasks/{task_id}",
        response_model=TaskRecord,
        tags=["tasks"],
        responses={409: {"description": "The task has started or is already final."}},
    )
    async def cancel_task(task_id: TaskId, services: ServicesDep, caller: CallerDep) -> TaskRecord:
        """Cancel a task that has not started; it will not run, on any broker."""
        await owned_task(services.store, task_id, caller)  # 404 for another key's task
        record = await services.submitter.cancel(task_id)
        return record
