"""What runs inside a worker process around each task: state moves, errors as data."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from celery.exceptions import Reject, SoftTimeLimitExceeded
from pydantic import ValidationError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from asyncml.errors import (
    AsyncmlError,
    InputInvalid,
    ServiceUnavailable,
    TaskTimeout,
    describe_errors,
)
from asyncml.fetch import Fetcher
from asyncml.kinds import TaskContext, TaskKind
from asyncml.settings import Settings
from asyncml.store import ErrorBody, TaskStatus, TaskStore, open_store, utcnow
from asyncml.store.records import Event
from asyncml.webhooks import notice

log = logging.getLogger(__name__)

# A worker that cannot reach the store keeps trying for this long before it gives the
# message back to the broker (the task then runs again rather than being lost).
_STORE_RETRY_S = 60.0


class WorkerRuntime:
    """Per-process state: the store connection and the task context, made after fork."""

    def __init__(self, settings: Settings, *, store_retry_s: float = _STORE_RETRY_S) -> None:
        self.settings = settings
        self.store_retry_s = store_retry_s
        self._pid: int | None = None
        self._store: TaskStore | None = None
        self._ctx: TaskContext | None = None
        self._webhook_fetcher: Fetcher | None = None
        # Set by the engine: queue a webhook notice (task id, event, body).
        self.notify: Callable[[str, str, dict[str, Any]], None] | None = None

    @property
    def store(self) -> TaskStore:
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.settings)
            self._ctx = TaskContext(self.settings, store=self._store)
            self._pid = os.getpid()
        return self._store

    @property
    def webhook_fetcher(self) -> Fetcher:
        """The guarded fetcher with webhook limits: no redirects (a 3xx is a failure)."""
        if self._webhook_fetcher is None:
            timeout = self.settings.webhook_timeout_s
            self._webhook_fetcher = dataclasses.replace(
                Fetcher.from_settings(self.settings),
                connect_timeout_s=min(timeout, self.settings.fetch_connect_timeout_s),
                read_timeout_s=timeout,
                total_timeout_s=timeout,
                max_redirects=0,
            )
        return self._webhook_fetcher

    def _announce(self, task_id: str, event: Event, store: TaskStore | None = None) -> None:
        """Queue the webhook notice of ``event`` if the task asked for it. Never fails the
        task: a notice that cannot be queued is logged."""
        if self.notify is None:
            return
        try:
            record = (store or self.store).get(task_id)
            if record is None or record.callback is None or event not in record.callback.events:
                return
            self.notify(task_id, event, notice(record, event))
        except Exception:
            log.exception("could not queue the %s notice of task %s", event, task_id)

    def _retrying(self, within_s: float | None = None) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(ServiceUnavailable),
            stop=stop_after_delay(min(self.store_retry_s, within_s or self.store_retry_s)),
            wait=wait_exponential_jitter(multiplier=0.1, max=5, jitter=0.1),
            reraise=True,
        )

    def _finish(
        self,
        kind: TaskKind[Any, Any],
        task_id: str,
        *,
        result: dict[str, Any] | None = None,
        error: ErrorBody | None = None,
    ) -> TaskStatus:
        """Store the outcome, retrying within the grace period; else give the message back.

        The retry stays inside ``grace_s`` so the hard time limit does not cut it short;
        a result that cannot be stored is worth a re-run, never a silent loss.
        """
        status = TaskStatus.SUCCESS if error is None else TaskStatus.FAILURE
        retrying = self._retrying(within_s=0.8 * kind.limits.grace_s)
        try:
            retrying(self.store.finish, task_id, status, utcnow(), result=result, error=error)
        except (ServiceUnavailable, SoftTimeLimitExceeded) as exc:
            raise Reject(f"cannot store the outcome: {exc!r}", requeue=True) from exc
        return status

    def record_timeout(self, kind: TaskKind[Any, Any], task_id: str) -> None:
        """Called in the worker's main process after a hard kill: one quick attempt only.

        Retrying here would stall the main process (message intake, heartbeats). The store
        is opened and closed here, never kept: children forked later must not inherit it.
        """
        error = ErrorBody(
            type=TaskTimeout.type,
            message=f"{kind.name} was killed after its hard time limit of "
            f"{kind.limits.timeout_s + kind.limits.grace_s:g} s",
        )
        store = open_store(self.settings)
        try:
            store.finish(task_id, TaskStatus.FAILURE, utcnow(), error=error)
            self._announce(task_id, "completed", store)
        except ServiceUnavailable as exc:
            log.error("%s task %s timed out; could not record it: %s", kind.name, task_id, exc)
        finally:
            store.close()

    def execute(self, kind: TaskKind[Any, Any], task_id: str, payload: dict[str, Any]) -> None:
        try:
            attempt = self._retrying(within_s=kind.limits.timeout_s / 2)(
                self.store.start, task_id, utcnow()
            )
        except ServiceUnavailable as exc:
            raise Reject(str(exc), requeue=True) from exc
        if not attempt:
            log.info("skipping %s task %s: cancelled, finished or expired", kind.name, task_id)
            return
        if attempt > kind.limits.max_attempts:
            log.error("%s task %s: attempt %d, giving up", kind.name, task_id, attempt)
            self._finish(
                kind,
                task_id,
                error=ErrorBody(
                    type="worker_lost",
                    message=f"{kind.name} was started {attempt - 1} times and its worker "
                    "process died each time (crash, out of memory or kill); not retried",
                ),
            )
            self._announce(task_id, "completed")
            return
        if attempt == 1:
            self._announce(task_id, "started")
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
            error = ErrorBody(type=InputInvalid.type, message=describe_errors(exc.errors()))
        except AsyncmlError as exc:
            error = ErrorBody.model_validate(exc.to_body())
        except Exception as exc:
            log.exception("%s task %s crashed", kind.name, task_id)
            error = ErrorBody(type="internal_error", message=f"{type(exc).__name__}: {exc}")
        status = self._finish(kind, task_id, result=result, error=error)
        self._announce(task_id, "completed")
        log.info("%s task %s finished: %s", kind.name, task_id, status.value)
