"""What routes depend on, built once in the app's lifespan and handed out per request."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request
from pydantic import BaseModel

from asyncml import metrics
from asyncml.engine import Engine
from asyncml.errors import InputInvalid, ServiceUnavailable
from asyncml.fetch import literal_refusal
from asyncml.kinds import TaskKind
from asyncml.registry import Registry
from asyncml.settings import Settings
from asyncml.store import AsyncTaskStore, Callback, TaskRecord, TaskStatus, utcnow

log = logging.getLogger(__name__)


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
    ) -> TaskRecord:
        """Record QUEUED first, then publish: an id the client holds is never unknown.

        If the broker refuses, the record goes too: the client got a 503 and no id.
        ``exclude`` names the body's fields that are options of the route, not input.
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
        try:
            await anyio.to_thread.run_sync(self.engine.publish, kind, record.id, payload)
        except BaseException:
            # Also on cancellation (client gone): the record must not outlive its message.
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.delete(record.id)
                except ServiceUnavailable:
                    log.error("task %s not queued and its record not deleted", record.id)
            raise
        metrics.TASKS_SUBMITTED.labels(kind.name).inc()
        return record


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
