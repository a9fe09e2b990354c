"""What routes depend on, built once in the app's lifespan and handed out per request."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Header, Request
from pydantic import BaseModel, ConfigDict

from asyncml import metrics
from asyncml.engine import Engine
from asyncml.errors import InputInvalid, ServiceUnavailable, UnsupportedMediaType
from asyncml.fetch import literal_refusal
from asyncml.kinds import TaskKind
from asyncml.registry import Registry
from asyncml.settings import Settings
from asyncml.store import AsyncTaskStore, Callback, TaskRecord, TaskStatus, utcnow

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_S = 24 * 3600


@dataclass
class Services:
    settings: Settings
    registry: Registry
    engine: Engine
    store: AsyncTaskStore

    async def submit(
        self,
        kind: TaskKind[Any, Any],
        body: BaseModel,
        *,
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
        record = TaskRecord(
            id=str(uuid.uuid4()),
            kind=kind.name,
            status=TaskStatus.QUEUED,
            submitted_at=utcnow(),
            callback=callback,
        )
        await self.store.create(record)
        payload = body.model_dump(mode="json", exclude=exclude)
        if idempotency_key is not None:
            replayed = await self._claim(kind, record, payload, callback, idempotency_key)
            if replayed is not None:
                return replayed, True
        try:
            await anyio.to_thread.run_sync(self.engine.publish, kind, record.id, payload)
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
            await self.store.create(record)
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
    404: _error("No such task (or route); unknown and not-yours look the same."),
    413: _error("The body is larger than ASYNCML_API_MAX_BODY_BYTES."),
    415: _error("The body is not sent as JSON."),
    503: _error("The broker or the result store is unavailable; retry after a while."),
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


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
