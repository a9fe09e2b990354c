"""Celery app construction and the publish path used by the API."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from amqp.exceptions import MessageNacked
from celery import Celery
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError

from asyncml.engine.runtime import WorkerRuntime
from asyncml.errors import ServiceUnavailable
from asyncml.kinds import TaskKind
from asyncml.registry import Registry
from asyncml.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_QUEUE = "webhooks"
DELIVER_TASK = "asyncml.webhooks.deliver"
# The embedded broker is polled: a worker that holds only the messages it runs waits a
# polling interval for the next one after each task. Holding a few more keeps its pool
# busy; a worker that dies leaves them to the next start's recovery (one host only).
EMBEDDED_PREFETCH = 8
NOTICE_ID_PREFIX = "notice:"


def all_queues(registry: Registry) -> list[str]:
    """The kinds' queues and the engine's own (webhook deliveries)."""
    return sorted({*registry.queues, WEBHOOK_QUEUE})


def celery_config(settings: Settings, registry: Registry) -> dict[str, Any]:
    """Reliability first: a message is acked only after its task ran, one at a time per child."""
    embedded = settings.embedded_broker
    transport_options: dict[str, Any]
    if embedded:
        import asyncml.engine.embedded  # noqa: F401  # registers the embedded transport

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        transport_options = {"polling_interval": settings.embedded_poll_interval_s}
    else:
        transport_options = {"confirm_publish": True}
    return {
        "broker_url": settings.broker_url_value(),
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.publish_timeout_s / 3,  # 3 attempts per publish
        "broker_pool_limit": 10,
        "broker_pool_acquire_timeout": settings.publish_timeout_s,
        "task_queues": [
            Queue(q, Exchange(q, type="direct", durable=True), routing_key=q, durable=True)
            for q in all_queues(registry)
        ],
        "task_routes": {
            DELIVER_TASK: {"queue": WEBHOOK_QUEUE, "routing_key": WEBHOOK_QUEUE},
            **{k.name: {"queue": k.queue, "routing_key": k.queue} for k in registry},
        },
        "task_default_queue": registry.queues[0] if len(registry) else "default",
        "task_default_delivery_mode": "persistent",
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        # Said explicitly: a hard time limit must ack (Celery's default today), else the
        # message comes back and the task is killed again, for ever.
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": EMBEDDED_PREFETCH if embedded else 1,
        "task_ignore_result": True,
        "result_expires": settings.result_ttl_s,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_enable_remote_control": not embedded,
        "worker_send_task_events": not embedded,
        # No task-sent event from the API: one more publish per submission, and Flower
        # learns of each task from the worker's task-received event anyway.
        "task_send_sent_event": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_channel_error_retry": True,
    }


def make_celery(settings: Settings, registry: Registry) -> Celery:
    app = Celery("asyncml", set_as_current=False)
    app.conf.update(celery_config(settings, registry))
    runtime = WorkerRuntime(settings)
    for kind in registry:
        _register(app, kind, runtime)
    _register_delivery(app, runtime)
    runtime.notify = lambda task_id, event, body: send_notice(app, settings, task_id, event, body)
    app.asyncml_runtime = runtime  # type: ignore[attr-defined]  # reached by worker signals
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


def send_bounded(
    app: Celery,
    settings: Settings,
    name: str,
    args: list[Any],
    *,
    queue: str,
    task_id: str | None = None,
    countdown: float | None = None,
) -> None:
    """Publish one message with every wait bounded (pool, connection, confirm); any failure
    becomes ServiceUnavailable, so no caller hangs on a stalled broker or sees a 500."""
    timeout = settings.publish_timeout_s
    connection_errors: tuple[type[BaseException], ...] = (OperationalError, OSError)
    try:
        app.send_task(
            name,
            args=args,
            task_id=task_id,
            queue=queue,
            routing_key=queue,
            countdown=countdown,
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0.1,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
            timeout=timeout,
            confirm_timeout=timeout,
        )
    except MessageNacked as exc:
        log.warning("broker refused %s message %s", name, task_id)
        raise ServiceUnavailable("the broker refused the message (nack); retry later") from exc
    except connection_errors as exc:
        log.warning("publish of %s %s failed: %s", name, task_id, type(exc).__name__)
        raise ServiceUnavailable(
            f"the broker is unavailable, nothing queued ({type(exc).__name__}); retry later"
        ) from exc
    except Exception as exc:
        # Not a known outage, but nothing is queued either: say so, keep the trace.
        log.exception("unexpected publish failure for %s %s", name, task_id)
        raise ServiceUnavailable(
            f"the message could not be queued ({type(exc).__name__}); retry later"
        ) from exc


def send_notice(
    app: Celery,
    settings: Settings,
    task_id: str,
    event: str,
    body: dict[str, Any],
    attempt: int = 1,
    countdown: float = 0,
) -> None:
    """Queue one webhook delivery attempt (a message of its own, never a loop in the API).

    Its message id names the task, the event and the attempt, so the embedded broker's
    recovery can tell whose notice it is.
    """
    send_bounded(
        app,
        settings,
        DELIVER_TASK,
        [task_id, event, body, attempt],
        queue=WEBHOOK_QUEUE,
        task_id=f"{NOTICE_ID_PREFIX}{task_id}:{event}:{attempt}:{uuid.uuid4().hex[:8]}",
        countdown=countdown or None,
    )


def _register_delivery(app: Celery, runtime: WorkerRuntime) -> None:
    def deliver(task_id: str, event: str, body: dict[str, Any], attempt: int) -> None:
        from asyncml.webhooks import deliver_once

        try:
            delay = deliver_once(
                runtime.settings,
                runtime.store,
                runtime.webhook_fetcher,
                task_id=task_id,
                event=event,  # type: ignore[arg-type]  # checked when the notice was made
                body=body,
                attempt=attempt,
            )
            if delay is not None:
                send_notice(
                    app, runtime.settings, task_id, event, body, attempt + 1, countdown=delay
                )
        except (ServiceUnavailable, SoftTimeLimitExceeded) as exc:
            # Store or broker away, or out of time: the message comes back, the notice waits.
            raise Reject(f"delivery attempt not settled: {exc!r}", requeue=True) from exc

    app.task(
        name=DELIVER_TASK,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        soft_time_limit=math.ceil(runtime.settings.webhook_timeout_s + 10),
        time_limit=math.ceil(runtime.settings.webhook_timeout_s + 20),
    )(deliver)


class Engine:
    """The API's handle on the broker: publish a task or check that the broker answers."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.celery = make_celery(settings, registry)
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

    def publish_notice(self, task_id: str, event: str, body: dict[str, Any]) -> None:
        send_notice(self.celery, self.settings, task_id, event, body)

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
