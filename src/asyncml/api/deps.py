"""What routes depend on, built once in the app's lifespan and handed out per request."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AnyUrl, BaseModel, ConfigDict

from asyncml import metrics
from asyncml.api.limits import QueueGate, RateGate
from asyncml.auth import Authenticator, Caller
from asyncml.engine import Engine
from asyncml.errors import (
    InputInvalid,
    RateLimited,
    ServiceUnavailable,
    TaskNotFound,
    UnsupportedMediaType,
)
from asyncml.fetch import literal_refusal
from asyncml.kinds import TaskKind
from asyncml.registry import Registry
from asyncml.settings import Settings
from asyncml.store import AsyncTaskStore, Callback, TaskRecord, TaskStatus, utcnow

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_S = 24 * 3600
UNFINISHED_RETRY_S = 2.0


@dataclass
class Services:
    settings: Settings
    registry: Registry
    engine: Engine
    store: AsyncTaskStore
    auth: Authenticator
    rates: RateGate
    queues: QueueGate

    async def owned(self, task_id: str, caller: Caller, *, wait_s: float = 0) -> TaskRecord:
        """The caller's task, or 404: another key's task looks exactly like an unknown id."""
        if wait_s > 0:
            record = await self.store.get(task_id)
            if record is not None and record.owner == caller.owner and not record.final:
                record = await self.store.wait(task_id, wait_s)
        else:
            record = await self.store.get(task_id)
        if record is None or record.owner != caller.owner:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return record

    async def submit(
        self,
        kind: TaskKind[Any, Any],
        body: BaseModel,
        *,
        caller: Caller,
        exclude: set[str] | None = None,
        callback: Callback | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[TaskRecord, bool]:
        """Record QUEUED first, then publish: an id the client holds is never unknown.

        If the broker refuses, the record goes too: the client got a 503 and no id.
        ``exclude`` names the body's fields that are options of the route, not input.
        With an ``idempotency_key`` already used for the same kind and body, nothing is
        queued and the original task comes back; returns (task, replayed).
        """
        if callback is not None:
            if self.settings.webhook_secret is None:
                raise InputInvalid(
                    "callback_url: webhooks are not configured on this server "
                    "(it has no ASYNCML_WEBHOOK_SECRET)"
                )
            refused = literal_refusal(
                callback.url,
                allow_loopback=self.settings.webhook_allow_loopback,
                allow_private=self.settings.webhook_allow_private,
            )
            if refused is not None:
                raise InputInvalid(f"callback_url: {refused}")
        self._refuse_literal_destinations(body, exclude or set())
        await self.queues.admit(kind.queue)
        record = TaskRecord(
            id=str(uuid.uuid4()),
            kind=kind.name,
            status=TaskStatus.QUEUED,
            submitted_at=utcnow(),
            callback=callback,
            owner=caller.owner,
        )
        max_open = self.settings.max_unfinished_per_key if caller.key is not None else 0
        if caller.key is not None and caller.key.max_unfinished is not None:
            max_open = caller.key.max_unfinished
        if not await self.store.create(record, max_open=max_open):
            raise RateLimited(
                f"API key {caller.name!r} has {max_open} unfinished tasks, its cap; "
                "wait for some to finish",
                retry_after_s=UNFINISHED_RETRY_S,
            )
        payload = body.model_dump(mode="json", exclude=exclude)
        if idempotency_key is not None:
            # Keys are per caller: one key's Idempotency-Key never finds another's task.
            idempotency_key = f"{caller.owner}:{idempotency_key}"
            replayed = await self._claim(kind, record, payload, callback, idempotency_key)
            if replayed is not None:
                return replayed, True
        try:
            notices = [] if callback is None else list(callback.events)
            await anyio.to_thread.run_sync(self.engine.publish, kind, record.id, payload, notices)
        except BaseException:
            # Also on cancellation (client gone): the record must not outlive its message.
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.delete(record.id)
                    if idempotency_key is not None:
                        await self.store.release_key(idempotency_key)
                except ServiceUnavailable:
                    log.error("task %s not queued and its record not deleted", record.id)
            raise
        metrics.TASKS_SUBMITTED.labels(kind.name).inc()
        return record, False

    def _refuse_literal_destinations(self, body: BaseModel, exclude: set[str]) -> None:
        """A URL input whose host is an address the fetch guard refuses is a 422 now, not a
        FAILURE later (names are judged by the worker, after it resolves them)."""
        for name, value in body:
            if name in exclude or not isinstance(value, AnyUrl):
                continue
            refused = literal_refusal(
                str(value),
                allow_loopback=self.settings.fetch_allow_loopback,
                allow_private=self.settings.fetch_allow_private,
            )
            if refused is not None:
                raise InputInvalid(f"{name}: {refused}")

    async def _claim(
        self,
        kind: TaskKind[Any, Any],
        record: TaskRecord,
        payload: dict[str, Any],
        callback: Callback | None,
        key: str,
    ) -> TaskRecord | None:
        """Bind ``key`` to this new task, or return the task it already names (and drop
        ours). The fingerprint covers kind, input and callback: the same key with another
        request is a client bug, answered 422."""
        fingerprint = hashlib.sha256(
            json.dumps(
                [kind.name, payload, None if callback is None else callback.model_dump()],
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        ).hexdigest()
        bound = await self.store.claim_key(key, fingerprint, record.id, IDEMPOTENCY_TTL_S)
        if bound is None:
            return None
        await self.store.delete(record.id)
        bound_id, bound_print = bound
        if bound_print != fingerprint:
            raise InputInvalid(
                "Idempotency-Key: this key was used within 24 h for a different request"
            )
        original = await self.store.get(bound_id)
        if original is None:  # the original's record has expired: the key is free again
            await self.store.release_key(key)
            await self.store.create(record)  # the cap was checked for this record already
            return await self._claim(kind, record, payload, callback, key)
        return original


class ErrorResponse(BaseModel):
    """Every error body: a stable type and a readable message (422s add ``errors``)."""

    type: str
    message: str


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# What any route may answer besides its own success; documented so clients (and the
# schema-driven fuzz test) know every status they can get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The request is malformed (e.g. a body that is not UTF-8)."),
    401: _error("No valid API key (send Authorization: Bearer aml_...)."),
    404: _error("No such task (or route); unknown and not-yours look the same."),
    413: _error("The body is larger than ASYNCML_API_MAX_BODY_BYTES."),
    415: _error("The body is not sent as JSON."),
    429: _error("Over the key's request rate or its cap of unfinished tasks; see Retry-After."),
    503: _error("The broker or the store is unavailable, or the queue is full; see Retry-After."),
}


def strict(model: type[BaseModel]) -> type[BaseModel]:
    """The same input, refusing what it does not name (a typo is a 422, not ignored) and
    NaN or infinities. The worker parses with the kind's own model, unchanged."""
    config = ConfigDict(**{**model.model_config, "extra": "forbid", "allow_inf_nan": False})
    return type(f"Strict{model.__name__}", (model,), {"model_config": config})


async def require_json(content_type: Annotated[str | None, Header()] = None) -> None:
    """415 for a body that says it is not JSON (or says nothing), before reading it."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as JSON with Content-Type: application/json (got {media or 'none'})"
        )


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, one
    # thread hop per request for a dictionary lookup.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (aml_...), required unless the server runs without keys.",
)


async def authenticate(
    request: Request,
    response: Response,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Who calls (401 if keys are required and none valid is sent), counted against its
    rate (429 past it); the ``RateLimit-*`` headers go on the answer."""
    header = None if credentials is None else f"Bearer {credentials.credentials}"
    caller = await services.auth.authenticate(header)
    response.headers.update(await services.rates.check(caller))
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]
