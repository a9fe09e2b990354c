"""The Celery app of a process: each kind's task, the delivery task, and the API's handle."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure
from kombu.exceptions import OperationalError

from asyncml.engine.config import WEBHOOK_QUEUE, all_queues, celery_config
from asyncml.engine.notices import TaskNotices
from asyncml.engine.publish import send_bounded
from asyncml.engine.runtime import WorkerRuntime
from asyncml.errors import ServiceUnavailable
from asyncml.kinds import TaskKind
from asyncml.records import TaskRecord
from asyncml.registry import Registry
from asyncml.settings import Settings

__all__ = ["WEBHOOK_QUEUE", "Engine", "all_queues", "make_celery"]

log = logging.getLogger(__name__)


def make_celery(settings: Settings, registry: Registry) -> Celery:
    app = Celery("asyncml", set_as_current=False)
    app.conf.update(celery_config(settings, registry))
    notices = TaskNotices.on_celery(app, settings)
    runtime = WorkerRuntime(settings, notices=notices)
    for kind in registry:
        _register(app, kind, runtime)
    notices.register_delivery(app, runtime)
    return app


def _register(app: Celery, kind: TaskKind[Any, Any], runtime: WorkerRuntime) -> None:
    def run(
        payload: dict[str, Any],
        submitted_at: float | None = None,
        notices: list[str] | None = None,
    ) -> None:
        from celery import current_task

        runtime.execute(kind, str(current_task.request.id), payload, submitted_at, notices)

    run.__name__ = kind.name.replace(".", "_")
    task = app.task(
        name=kind.name,
        shared=False,  # else Celery adds it to every app made later in this process
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        soft_time_limit=math.ceil(kind.limits.timeout_s),
        time_limit=math.ceil(kind.limits.timeout_s + kind.limits.grace_s),
    )(run)

    def on_failure(
        sender: object = None, task_id: str = "", exception: object = None, **_: object
    ) -> None:
        # A hard time limit kills the child before it can write anything: the main
        # worker process records the timeout here (Celery then acks the message).
        if isinstance(exception, TimeLimitExceeded):
            runtime.record_timeout(kind, task_id)

    task_failure.connect(on_failure, sender=task, weak=False)


class Engine:
    """A process's handle on the broker: publish a task, announce a cancel, read depths."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.celery = make_celery(settings, registry)
        self.notices = TaskNotices.on_celery(self.celery, settings)
        with self.celery.connection_for_write() as conn:
            # What this transport raises when the broker is away (no I/O here).
            self._connection_errors: tuple[type[BaseException], ...] = (
                *conn.connection_errors,
                *conn.channel_errors,
                OperationalError,
                OSError,
            )

    def publish(
        self,
        kind: TaskKind[Any, Any],
        task_id: str,
        payload: dict[str, Any],
        notices: Sequence[str] | None = None,
    ) -> None:
        """Blocking publish (run it in a thread); waits for the broker's confirm on AMQP.

        Every wait is bounded by the publish timeout (pool, connection, confirm), so a
        stalled broker gives the client a 503, not a hung request. ``notices`` are the
        webhook events the task's record asks for, when the caller knows them: a worker
        then reads the record for a notice only when one is owed (``None``: it reads).
        """
        send_bounded(
            self.celery,
            self.settings,
            kind.name,
            [payload, time.time(), None if notices is None else list(notices)],
            queue=kind.queue,
            task_id=task_id,
        )

    def announce_cancelled(self, record: TaskRecord) -> None:
        """Blocking; raises ServiceUnavailable if the notice owed cannot be queued."""
        self.notices.announce_cancelled(record)

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each queue, asked of the broker (blocking; for /metrics)."""
        queues = all_queues(self.registry)
        if self.settings.embedded_broker:
            from asyncml.engine.embedded import waiting_messages

            return waiting_messages(self.settings, queues)
        depths: dict[str, int] = {}
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=1, timeout=math.ceil(self.settings.publish_timeout_s)
            )
            channel: Any = conn.default_channel  # kombu types the channel loosely
            for queue in queues:
                try:
                    declared = channel.queue_declare(queue=queue, passive=True)
                except self._connection_errors:
                    continue  # not declared yet: no worker has consumed it
                depths[queue] = int(declared.message_count)
        return depths

    def ping_broker(self) -> None:
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(
                    max_retries=1, timeout=math.ceil(self.settings.publish_timeout_s)
                )
        except self._connection_errors as exc:
            raise ServiceUnavailable(f"broker unreachable ({type(exc).__name__})") from exc

    def close(self) -> None:
        self.celery.close()
