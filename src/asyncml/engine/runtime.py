"""What runs inside a worker process around each task: state moves, errors as data."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.exceptions import Reject, SoftTimeLimitExceeded
from pydantic import ValidationError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from asyncml.errors import AsyncmlError, InputInvalid, ServiceUnavailable, TaskTimeout
from asyncml.kinds import TaskContext, TaskKind
from asyncml.settings import Settings
from asyncml.store import ErrorBody, TaskStatus, TaskStore, open_store, utcnow

log = logging.getLogger(__name__)

# A worker that cannot reach the store keeps trying for this long before it gives the
# message back to the broker (the task then runs again rather than being lost).
_STORE_RETRY_S = 60.0


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class WorkerRuntime:
    """Per-process state: the store connection and the task context, made after fork."""

    def __init__(self, settings: Settings, *, store_retry_s: float = _STORE_RETRY_S) -> None:
        self.settings = settings
        self.store_retry_s = store_retry_s
        self._pid: int | None = None
        self._store: TaskStore | None = None
        self._ctx: TaskContext | None = None

    @property
    def store(self) -> TaskStore:
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.settings)
            self._ctx = TaskContext(self.settings)
            self._pid = os.getpid()
        return self._store

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(ServiceUnavailable),
            stop=stop_after_delay(self.store_retry_s),
            wait=wait_exponential_jitter(multiplier=0.1, max=5, jitter=0.1),
            reraise=True,
        )

    def record_timeout(self, kind: TaskKind[Any, Any], task_id: str) -> None:
        error = ErrorBody(
            type=TaskTimeout.type,
            message=f"{kind.name} was killed after its hard time limit of "
            f"{kind.limits.timeout_s + kind.limits.grace_s:g} s",
        )
        self._retrying()(self.store.finish, task_id, TaskStatus.FAILURE, utcnow(), error=error)

    def execute(self, kind: TaskKind[Any, Any], task_id: str, payload: dict[str, Any]) -> None:
        store = self.store
        try:
            started = self._retrying()(store.start, task_id, utcnow())
        except ServiceUnavailable as exc:
            raise Reject(str(exc), requeue=True) from exc
        if not started:
            log.info("skipping %s task %s: cancelled, finished or expired", kind.name, task_id)
            return
        assert self._ctx is not None
        self._ctx.task_id = task_id
        result: dict[str, Any] | None = None
        error: ErrorBody | None = None
        try:
            result = kind.run(payload, self._ctx)
        except SoftTimeLimitExceeded:
            error = ErrorBody(
                type=TaskTimeout.type,
                message=f"{kind.name} ran past its time limit of {kind.limits.timeout_s:g} s",
            )
        except ValidationError as exc:
            error = ErrorBody(type=InputInvalid.type, message=describe_validation_error(exc))
        except AsyncmlError as exc:
            error = ErrorBody.model_validate(exc.to_body())
        except Exception as exc:
            log.exception("%s task %s crashed", kind.name, task_id)
            error = ErrorBody(type="internal_error", message=f"{type(exc).__name__}: {exc}")
        status = TaskStatus.SUCCESS if error is None else TaskStatus.FAILURE
        try:
            self._retrying()(store.finish, task_id, status, utcnow(), result=result, error=error)
        except ServiceUnavailable as exc:
            # Give the message back: running the task again beats losing its result.
            raise Reject(str(exc), requeue=True) from exc
        log.info("%s task %s finished: %s", kind.name, task_id, status.value)
