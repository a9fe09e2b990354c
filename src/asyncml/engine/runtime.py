"""What runs inside a worker process around each task: state moves, errors as data."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from celery.exceptions import Reject, SoftTimeLimitExceeded
from pydantic import ValidationError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from asyncml import metrics
from asyncml.engine.progress import EventFlusher
from asyncml.errors import (
    AsyncmlError,
    InputInvalid,
    ServiceUnavailable,
    TaskTimeout,
    describe_errors,
)
from asyncml.fetch import Fetcher
from asyncml.kinds import TaskContext, TaskKind, remove_orphaned_scratch
from asyncml.logging import task_context
from asyncml.records import Event
from asyncml.settings import Settings
from asyncml.store import ErrorBody, TaskStatus, TaskStore, open_store, utcnow
from asyncml.store.dead_letters import DeadLetter

if TYPE_CHECKING:
    from asyncml.engine.notices import TaskNotices

log = logging.getLogger(__name__)

# A worker that cannot reach the store keeps trying for this long before it gives the
# message back to the broker (the task then runs again rather than being lost).
_STORE_RETRY_S = 60.0


class WorkerRuntime:
    """Per-process state: the store connection and the task context, made after fork."""

    def __init__(
        self,
        settings: Settings,
        *,
        notices: TaskNotices | None = None,
        store_retry_s: float = _STORE_RETRY_S,
    ) -> None:
        self.settings = settings
        self.store_retry_s = store_retry_s
        self._pid: int | None = None
        self._store: TaskStore | None = None
        self._ctx: TaskContext | None = None
        self._webhook_fetcher: Fetcher | None = None
        # The outlet for what a task announces (None: announce nothing, e.g. in tests).
        self.notices = notices
        self.events = EventFlusher(
            lambda: self.store, None if notices is None else notices.announce_event
        )
        # Celery's trace logs "Task ... succeeded" for every task that returns, and each of
        # ours returns, FAILURE included: the line of record is ours ("finished: FAILURE").
        logging.getLogger("celery.app.trace").setLevel(logging.WARNING)

    @property
    def store(self) -> TaskStore:
        if self._store is None or self._pid != os.getpid():
            remove_orphaned_scratch()  # left by a worker process that was killed mid-task
            self._store = open_store(self.settings)
            self._ctx = TaskContext(self.settings, store=self._store)
            self._pid = os.getpid()
        return self._store

    @property
    def worker_name(self) -> str:
        """Who runs a task, as its ``started`` event says: host and process."""
        return f"{socket.gethostname()}/{os.getpid()}"

    @property
    def context(self) -> TaskContext:
        """The task context of this process (made with the store, after fork)."""
        self.store  # noqa: B018  # opens the per-process store and context if not yet
        if self._ctx is None:
            raise RuntimeError("the worker runtime has no task context")
        return self._ctx

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
                allow_loopback=self.settings.webhook_allow_loopback,
                allow_private=self.settings.webhook_allow_private,
            )
        return self._webhook_fetcher

    def _announce(self, task_id: str, event: Event, store: TaskStore | None = None) -> None:
        """Queue the notice owed for ``event`` (see ``engine/notices.py`` for when). With
        the process's own store, a ``completed`` notice that cannot be queued gives the
        message back; with a store opened for one call (a hard time limit), it is logged."""
        if self.notices is not None:
            requeue = event == "completed" and store is None
            self.notices.announce(store or self.store, task_id, event, requeue_on_failure=requeue)

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
        run_s: float | None = None,
    ) -> TaskStatus:
        """Store the outcome, retrying within the grace period; else give the message back.

        The retry stays inside ``grace_s`` so the hard time limit does not cut it short;
        a result that cannot be stored is worth a re-run, never a silent loss.
        """
        status = TaskStatus.SUCCESS if error is None else TaskStatus.FAILURE
        retrying = self._retrying(within_s=0.8 * kind.limits.grace_s)
        try:
            retrying(
                self.store.finish,
                task_id,
                status,
                utcnow(),
                result=result,
                error=error,
                run_s=run_s,
            )
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
            if store.finish(task_id, TaskStatus.FAILURE, utcnow(), error=error):
                self._announce(task_id, "completed", store)
        except ServiceUnavailable as exc:
            log.error("%s task %s timed out; could not record it: %s", kind.name, task_id, exc)
        finally:
            store.close()

    def _give_up(
        self, kind: TaskKind[Any, Any], task_id: str, payload: dict[str, Any], *, attempts: int
    ) -> None:
        """A poison task: ``attempts`` runs each killed their worker. End it, keep it.

        The FAILURE is stored first (that is what ends the loop), then the task is copied
        to the dead-letter queue with its input, for ``asyncml dlq retry``. A copy that
        cannot be written is logged as an error (without the input: it may hold a URL's
        password), never retried by giving the message back: the task is final already.
        """
        log.error("%s task %s: its worker died on %d attempts", kind.name, task_id, attempts)
        error = ErrorBody(
            type="worker_lost",
            message=f"{kind.name} was started {attempts} times and its worker "
            "process died each time (crash, out of memory or kill); not retried",
            attempts=attempts,
        )
        self._finish(kind, task_id, error=error)
        metrics.TASKS_FINISHED.labels(kind.name, TaskStatus.FAILURE.value).inc()
        try:
            record = self.store.get(task_id)
            entry = DeadLetter(
                task_id=task_id,
                kind=kind.name,
                payload=payload,
                attempts=attempts,
                error=error,
                dead_at=utcnow(),
                callback=None if record is None else record.callback,
                owner=getattr(record, "owner", None) or None,
            )
            self._retrying(within_s=0.8 * kind.limits.grace_s)(self.store.dead_letter_add, entry)
            metrics.TASKS_DEAD_LETTERED.labels(kind.name).inc()
        except Exception:
            log.exception(
                "%s task %s ended as worker_lost but is NOT in the dead-letter queue",
                kind.name,
                task_id,
            )
        self._announce(task_id, "completed")

    def execute(
        self,
        kind: TaskKind[Any, Any],
        task_id: str,
        payload: dict[str, Any],
        submitted_at: float | None = None,
        notices: Collection[str] | None = None,
    ) -> None:
        """Run one delivery of a task; ``submitted_at`` (epoch) measures its queue wait.

        ``notices``, when the message carries them, are the webhook events the task's
        record asks for: with none asked, no notice is looked up (two reads of the record
        fewer). ``None`` (a message that does not say) means look in the record.
        """
        with task_context(task_id, kind.name):
            self._execute(kind, task_id, payload, submitted_at, notices)

    def _execute(
        self,
        kind: TaskKind[Any, Any],
        task_id: str,
        payload: dict[str, Any],
        submitted_at: float | None,
        notices: Collection[str] | None,
    ) -> None:
        try:
            attempt = self._retrying(within_s=kind.limits.timeout_s / 2)(
                functools.partial(self.store.start, task_id, utcnow(), worker=self.worker_name)
            )
        except ServiceUnavailable as exc:
            raise Reject(str(exc), requeue=True) from exc
        if not attempt:
            log.info("skipping %s task %s: cancelled, finished or expired", kind.name, task_id)
            if self.notices is not None:
                self.notices.announce_if_owed(self.store, task_id)
            return
        if attempt > kind.limits.max_attempts:
            self._give_up(kind, task_id, payload, attempts=attempt - 1)
            return
        if attempt == 1:
            if submitted_at is not None:
                metrics.TASK_QUEUE_WAIT.labels(kind.name).observe(
                    max(0.0, time.time() - submitted_at)
                )
            if notices is None or "started" in notices:
                self._announce(task_id, "started")
        began = time.perf_counter()
        result: dict[str, Any] | None = None
        error: ErrorBody | None = None
        try:
            with self.events.reporting(task_id, notices or ()) as reporter:
                # The task's own copy: its id, scratch folder and events.
                ctx = dataclasses.replace(self.context, task_id=task_id, reporter=reporter)
                result = kind.run(payload, ctx)
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
        run_s = time.perf_counter() - began
        metrics.TASK_RUN.labels(kind.name).observe(run_s)
        status = self._finish(kind, task_id, result=result, error=error, run_s=run_s)
        metrics.TASKS_FINISHED.labels(kind.name, status.value).inc()
        if notices is None or "completed" in notices:
            self._announce(task_id, "completed")
        outcome = status.value if error is None else f"{status.value} ({error.type})"
        log.info("%s task %s finished: %s in %.2f s", kind.name, task_id, outcome, run_s)
