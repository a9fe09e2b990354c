"""The classic routes existing clients use, unchanged in shape: thin adapters over v1.

``POST <path>`` answers ``201 {"id"}``; ``GET /task/{id}`` answers ``202`` until the task is
final, then ``200``, with Celery's status names (PENDING, STARTED, SUCCESS, FAILURE, REVOKED).
"""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response, status
from pydantic import BaseModel, StrictBool, create_model

from asyncml.api.deps import CallerDep, ServicesDep, authenticate
from asyncml.api.schema import ERROR_RESPONSES, require_json, strict
from asyncml.api.v1 import TaskId
from asyncml.auth import owned_task
from asyncml.kinds import TaskKind
from asyncml.registry import Registry
from asyncml.store import Callback, TaskStatus

log = logging.getLogger(__name__)

CLASSIC_STATUS = {
    TaskStatus.QUEUED: "PENDING",
    TaskStatus.STARTED: "STARTED",
    TaskStatus.SUCCESS: "SUCCESS",
    TaskStatus.FAILURE: "FAILURE",
    TaskStatus.CANCELLED: "REVOKED",
}


class ClassicAccepted(BaseModel):
    id: str


class ClassicTask(BaseModel):
    id: str
    status: str
    error: str | None = None
    result: Any = None


def _classic_route(router: APIRouter, kind: TaskKind[Any, Any]) -> None:
    if kind.classic is None:
        raise ValueError(f"{kind.name} declares no classic route")
    body_model: type[BaseModel] = create_model(
        f"Classic{kind.input_model.__name__}",
        __base__=strict(kind.input_model),
        callback=(StrictBool, False),
    )

    async def submit(
        body: Annotated[body_model, Body()],
        services: ServicesDep,
        caller: CallerDep,
    ) -> ClassicAccepted:
        callback = None
        if body.callback:  # type: ignore[attr-defined]  # added by create_model above
            url = services.settings.default_callback_url
            if url is None:
                log.info("classic %s: callback requested, no default callback URL set", kind.name)
            else:
                callback = Callback(url=str(url))
        submitted = await services.submitter.submit(
            kind, body, caller=caller, exclude={"callback"}, callback=callback
        )
        return ClassicAccepted(id=submitted.record.id)

    router.add_api_route(
        kind.classic.path,
        submit,
        methods=["POST"],
        dependencies=[Depends(require_json)],
        status_code=status.HTTP_201_CREATED,
        response_model=ClassicAccepted,
        summary=f"Submit one {kind.name} task (classic route)",
        operation_id=f"classic_{kind.name.replace('.', '_')}",
        tags=["classic"],
    )


def build_router(registry: Registry) -> APIRouter:
    router = APIRouter(responses=ERROR_RESPONSES, dependencies=[Depends(authenticate)])
    for kind in registry:
        if kind.classic is not None:
            _classic_route(router, kind)

    @router.get(
        "/task/{task_id}",
        response_model=ClassicTask,
        tags=["classic"],
        responses={202: {"description": "Not final yet: poll again."}},
    )
    async def get_task(
        task_id: TaskId, services: ServicesDep, caller: CallerDep, response: Response
    ) -> ClassicTask:
        record = await owned_task(services.store, task_id, caller)
        response.status_code = 200 if record.final else 202
        result = None
        if record.status is TaskStatus.SUCCESS and record.result is not None:
            kind_classic = registry.get(record.kind).classic if record.kind in registry else None
            result = kind_classic.result(record.result) if kind_classic else record.result
        return ClassicTask(
            id=record.id,
            status=CLASSIC_STATUS[record.status],
            error=record.error.message if record.error else None,
            result=result,
        )

    return router
