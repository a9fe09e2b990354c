"""The one way a task is submitted (v1, batch, classic and V2 routes, the dashboard, the DLQ
replay), and the one way it is cancelled (v1 and the dashboard).

Each submission goes through the same steps, in this order::

    refusal checks (callback policy, URL literals, queue depth)
    -> record QUEUED (within the owner's cap of unfinished tasks)
    -> idempotency claim (a replay returns the original task, and drops ours)
    -> publish -> undo (record and key go) if the publish fails

The record is written before the message so an id a client holds is never unknown, and
before the idempotency claim so a key always names a record that exists: a key whose
record is gone has expired. A submit refused by the cap still consults its key first: a
retried request whose original is unfinished gets the original (200), not a 429.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.to_thread
from pydantic import AnyUrl, BaseModel

from asyncml import metrics
from asyncml.auth import Caller
from asyncml.engine import Engine
from asyncml.errors import (
    InputInvalid,
    RateLimited,
    ServiceUnavailable,
    TaskConflict,
    TaskNotFound,
)
from asyncml.fetch import literal_refusal
from asyncml.kinds import TaskKind
from asyncml.records import Callback, TaskRecord, TaskStatus, utcnow
from asyncml.settings import Settings
from asyncml.store import AsyncTaskStore
from asyncml.store.history import kept_input

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_S = 24 * 3600
UNFINISHED_RETRY_S = 2.0


class QueueAdmission(Protocol):
    """Refuses a submission to a queue that is full (``ServiceUnavailable``)."""

    async def admit(self, queue: str) -> None: ...


class _NoInput(BaseModel):
    """Stands for an input that is not checked again."""


@dataclass(frozen=True)
class Submitted:
    """The task a submission stands for; ``replayed`` if an Idempotency-Key found it."""

    record: TaskRecord
    replayed: bool = False


@dataclass
class Submitter:
    settings: Settings
    engine: Engine
    store: AsyncTaskStore
    queues: QueueAdmission | None = None

    def cap_for(self, caller: Caller) -> int:
        """The caller's cap of unfinished tasks (0: none); only keys have one."""
        if caller.key is None:
            return 0
        if caller.key.max_unfinished is not None:
            return caller.key.max_unfinished
        return self.settings.max_unfinished_per_key

    async def submit(
        self,
        kind: TaskKind[Any, Any],
        inputs: BaseModel,
        *,
        caller: Caller,
        exclude: set[str] | None = None,
        callback: Callback | None = None,
        idempotency_key: str | None = None,
    ) -> Submitted:
        """Queue one task of ``kind``. ``exclude`` names the fields of ``inputs`` that are
        options of the route, not input."""
        # What the broker does for this submission (the queue-depth read, the publish and
        # its confirm) is bounded by the publish timeout from here, whatever kombu's own
        # waits (pool, connection, channel, confirm, retries) add up to.
        deadline = anyio.current_time() + self.settings.publish_timeout_s
        self._refuse(inputs, exclude or set(), callback)
        if self.queues is not None:
            with self._broker_bound(deadline, "the queue depth"):
                await self.queues.admit(kind.queue)
        payload = inputs.model_dump(mode="json", exclude=exclude)
        return await self._queue(
            kind,
            payload,
            deadline,
            owner=caller.owner,
            max_open=self.cap_for(caller),
            callback=callback,
            idempotency_key=idempotency_key,
            who=caller.name,
        )

    async def submit_batch(
        self,
        kind: TaskKind[Any, Any],
        inputs: Sequence[BaseModel],
        *,
        caller: Caller,
        callback: Callback | None = None,
        idempotency_key: str | None = None,
    ) -> list[Submitted]:
        """All or nothing: if one fails, the tasks this call queued are cancelled (they
        will not run) and the error is raised. Input ``i`` uses key ``<key>#<i>``."""
        done: list[Submitted] = []
        try:
            for i, one in enumerate(inputs):
                key = None if idempotency_key is None else f"{idempotency_key}#{i}"
                done.append(
                    await self.submit(
                        kind, one, caller=caller, callback=callback, idempotency_key=key
                    )
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                for submitted in done:
                    if submitted.replayed:
                        continue
                    try:
                        await self.store.cancel(submitted.record.id, utcnow())
                    except ServiceUnavailable:
                        log.error("batch: task %s queued and not cancelled", submitted.record.id)
            raise
        return done

    async def resubmit(
        self,
        kind: TaskKind[Any, Any],
        payload: dict[str, Any],
        *,
        owner: str,
        callback: Callback | None,
    ) -> TaskRecord:
        """An operator's replay (the dead-letter queue): the input as first submitted (it
        passed the checks then; the worker parses it again), for the original owner,
        outside any cap; the callback must still be one this server may call."""
        self._refuse(_NoInput(), set(), callback)
        deadline = anyio.current_time() + self.settings.publish_timeout_s
        submitted = await self._queue(
            kind,
            payload,
            deadline,
            owner=owner,
            max_open=0,
            callback=callback,
            idempotency_key=None,
        )
        return submitted.record

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task not started yet (the caller has checked who may); it will not run,
        on any broker. Raises TaskNotFound, or TaskConflict once it started or ended.

        Its ``completed`` notice is queued now; if the broker is away, the cancel stands
        and the worker that meets the task's message queues it (engine/notices.py)."""
        outcome = await self.store.cancel(task_id, utcnow())
        record = outcome.record
        if record is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        if not outcome.done:
            raise TaskConflict(
                f"task {task_id} is {record.status.value}; only a QUEUED task can be cancelled"
            )
        try:
            await anyio.to_thread.run_sync(self.engine.announce_cancelled, record)
        except ServiceUnavailable:
            log.warning("task %s cancelled; its notice will be queued by a worker", task_id)
        return record

    def _refuse(self, inputs: BaseModel, exclude: set[str], callback: Callback | None) -> None:
        """What can be refused before anything is stored: a 422 now, not a FAILURE later."""
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
                settings="ASYNCML_WEBHOOK",
            )
            if refused is not None:
                raise InputInvalid(f"callback_url: {refused}")
        # A URL input whose host is an address the fetch guard refuses (names are judged
        # by the worker, after it resolves them).
        for name, value in inputs:
            if name in exclude or not isinstance(value, AnyUrl):
                continue
            refused = literal_refusal(
                str(value),
                allow_loopback=self.settings.fetch_allow_loopback,
                allow_private=self.settings.fetch_allow_private,
            )
            if refused is not None:
                raise InputInvalid(f"{name}: {refused}")

    async def _queue(
        self,
        kind: TaskKind[Any, Any],
        payload: dict[str, Any],
        deadline: float,
        *,
        owner: str,
        max_open: int,
        callback: Callback | None,
        idempotency_key: str | None,
        who: str = "",
    ) -> Submitted:
        record = TaskRecord(
            id=str(uuid.uuid4()),
            kind=kind.name,
            status=TaskStatus.QUEUED,
            submitted_at=utcnow(),
            callback=callback,
            owner=owner,
            queue=kind.queue,
            input_json=kept_input(payload),
        )
        # Keys are per owner: one key's Idempotency-Key never finds another's task.
        key = None if idempotency_key is None else f"{owner}:{idempotency_key}"
        # Only a keyed request is compared with another: the others skip the hash.
        fingerprint = "" if key is None else _fingerprint(kind, payload, callback)
        if not await self.store.create(record, max_open=max_open):
            if key is not None and (original := await self._original(key, fingerprint, record)):
                return Submitted(original, replayed=True)
            raise RateLimited(
                f"API key {who!r} has {max_open} unfinished tasks, its cap; "
                "wait for some to finish",
                retry_after_s=UNFINISHED_RETRY_S,
            )
        if key is not None:
            original = await self._claim(key, fingerprint, record)
            if original is not None:
                return Submitted(original, replayed=True)
        try:
            await self._publish(kind, record.id, payload, callback, deadline)
        except BaseException:
            # Also on cancellation (client gone): the record must not outlive its message.
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.delete(record.id)
                    if key is not None:
                        await self.store.release_key(key)
                except ServiceUnavailable:
                    log.error("task %s not queued and its record not deleted", record.id)
            raise
        metrics.TASKS_SUBMITTED.labels(kind.name).inc()
        return Submitted(record)

    async def _publish(
        self,
        kind: TaskKind[Any, Any],
        task_id: str,
        payload: dict[str, Any],
        callback: Callback | None,
        deadline: float,
    ) -> None:
        """Publish in a thread, given up at ``deadline``: a frozen broker (SIGSTOP, a full
        disk) accepts the TCP connection and never answers, and kombu's timeouts apply per
        step. A publish given up on may still land later: its record is gone by then, so
        the worker that receives it skips it (no record, nothing runs)."""
        notices = [] if callback is None else list(callback.events)
        with self._broker_bound(deadline, "the message"):
            await anyio.to_thread.run_sync(
                self.engine.publish, kind, task_id, payload, notices, abandon_on_cancel=True
            )

    @contextmanager
    def _broker_bound(self, deadline: float, what: str) -> Iterator[None]:
        """Give up on the broker at ``deadline``, as a 503 naming the setting."""
        timeout = self.settings.publish_timeout_s
        try:
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                yield
        except TimeoutError as exc:
            log.warning("the broker did not answer for %s within %g s", what, timeout)
            raise ServiceUnavailable(
                f"the broker did not answer for {what} within {timeout:g} s "
                "(ASYNCML_PUBLISH_TIMEOUT_S); nothing queued, retry later"
            ) from exc

    async def _claim(self, key: str, fingerprint: str, record: TaskRecord) -> TaskRecord | None:
        """Bind ``key`` to our new (stored) task, or return the task it already names and
        drop ours."""
        bound = await self.store.claim_key(key, fingerprint, record.id, IDEMPOTENCY_TTL_S)
        if bound is None:
            return None
        await self.store.delete(record.id)
        original = await self._bound_task(key, fingerprint, bound)
        if original is None:  # the original's record has expired: the key is free again
            await self.store.create(record)  # the cap was checked for this record already
            return await self._claim(key, fingerprint, record)
        return original

    async def _original(self, key: str, fingerprint: str, record: TaskRecord) -> TaskRecord | None:
        """Over the cap: the task ``key`` names, if any. Nothing was stored for ``record``,
        so a key this call binds is released at once."""
        bound = await self.store.claim_key(key, fingerprint, record.id, IDEMPOTENCY_TTL_S)
        if bound is None:
            await self.store.release_key(key)
            return None
        original = await self._bound_task(key, fingerprint, bound)
        if original is None:
            await self.store.release_key(key)
        return original

    async def _bound_task(
        self, key: str, fingerprint: str, bound: tuple[str, str]
    ) -> TaskRecord | None:
        bound_id, bound_print = bound
        if bound_print != fingerprint:
            raise InputInvalid(
                "Idempotency-Key: this key was used within 24 h for a different request"
            )
        return await self.store.get(bound_id)


def _fingerprint(
    kind: TaskKind[Any, Any], payload: dict[str, Any], callback: Callback | None
) -> str:
    """Kind, input and callback: the same key with another request is a client bug (422)."""
    return hashlib.sha256(
        json.dumps(
            [kind.name, payload, None if callback is None else callback.model_dump()],
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
