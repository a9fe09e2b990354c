"""Everything a task announces, and when: the one outlet for task notices.

Today a notice is a signed webhook delivery (``webhooks.py`` signs and sends it); task
events will leave through here too. Which notices a task owes comes from its record's
callback (the events it asked for). When they are sent:

- ``started``: when a worker starts the task's first attempt; one that cannot be queued
  is only logged.
- ``progress``, ``log``, ``output``: as the task reports them, at most one per 500 ms per
  task (the latest wins), one attempt each, not recorded on the task.
- ``completed``: once the task is final. A worker that cannot queue it gives the task's
  message back to the broker: the redelivery finds the task final and queues the notice
  (``announce_if_owed``), so it is late rather than lost. A cancel queues it from the
  API; if the broker is away then, the worker that later receives the cancelled task's
  message queues it instead.

Every delivery attempt is a message of its own (never a loop in the API); its message id
names the task, the event and the attempt, so the embedded broker's recovery can tell
whose notice it is.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.exceptions import Reject, SoftTimeLimitExceeded

from asyncml.engine.config import DELIVER_TASK, WEBHOOK_QUEUE
from asyncml.engine.publish import send_bounded
from asyncml.errors import ServiceUnavailable, TaskConflict, TaskNotFound
from asyncml.records import Callback, Delivery, Event, TaskEvent, TaskRecord, utcnow
from asyncml.settings import Settings
from asyncml.webhooks import deliver_once, event_notice, notice

if TYPE_CHECKING:
    from asyncml.engine.runtime import WorkerRuntime
    from asyncml.store import TaskStore

log = logging.getLogger(__name__)

NOTICE_ID_PREFIX = "notice:"

# Queue one delivery attempt: task id, event, body, attempt number, delay in seconds.
Send = Callable[[str, Event, dict[str, Any], int, float], None]


def owes(callback: Callback | None, event: Event) -> bool:
    """Whether a task with this callback asked to be told of ``event``."""
    return callback is not None and event in callback.events


class TaskNotices:
    """Decides which notices are owed and queues them through ``send``."""

    def __init__(self, send: Send) -> None:
        self._send = send

    @classmethod
    def on_celery(cls, app: Celery, settings: Settings) -> TaskNotices:
        def send(
            task_id: str, event: Event, body: dict[str, Any], attempt: int, countdown: float
        ) -> None:
            send_bounded(
                app,
                settings,
                DELIVER_TASK,
                [task_id, event, body, attempt],
                queue=WEBHOOK_QUEUE,
                task_id=f"{NOTICE_ID_PREFIX}{task_id}:{event}:{attempt}:{uuid.uuid4().hex[:8]}",
                countdown=countdown or None,
            )

        return cls(send)

    def announce(
        self, store: TaskStore, task_id: str, event: Event, *, requeue_on_failure: bool
    ) -> None:
        """Queue the notice of ``event`` if the task asked for it, recording the delivery as
        pending (0 attempts) first. With ``requeue_on_failure`` a notice that cannot be
        queued gives the running task's message back (Celery ``Reject``)."""
        try:
            record = store.get(task_id)
            if record is None or not owes(record.callback, event):
                return
            store.set_delivery(task_id, event, Delivery(state="pending", updated_at=utcnow()))
            self._send(task_id, event, notice(record, event), 1, 0.0)
        except Exception as exc:
            log.exception("could not queue the %s notice of task %s", event, task_id)
            if requeue_on_failure:
                raise Reject(f"notice not queued: {exc!r}", requeue=True) from exc

    def announce_if_owed(self, store: TaskStore, task_id: str) -> None:
        """On a redelivery of a final task: queue its completed notice if it never was."""
        record = store.get(task_id)
        if record is None or not record.final or not owes(record.callback, "completed"):
            return
        sent = record.deliveries.get("completed")
        if sent is None or (sent.state == "pending" and sent.attempts == 0):
            self.announce(store, task_id, "completed", requeue_on_failure=True)

    def announce_event(self, task_id: str, event: TaskEvent) -> None:
        """An intermediate event (progress, log, output) a callback asked for: one delivery
        attempt, throttled by the caller (engine/progress.py), not recorded on the task."""
        self._send(task_id, event.type, event_notice(event), 1, 0.0)  # type: ignore[arg-type]  # an intermediate type

    def resend(self, store: TaskStore, task_id: str, event: Event) -> None:
        """An operator's second chance for a notice given up on: its delivery starts over
        (pending, 0 attempts, the full retry schedule) with the record's current body.
        Raises TaskNotFound if the task (or its callback) is gone, TaskConflict unless the
        delivery failed."""
        record = store.get(task_id)
        if record is None or record.callback is None:
            raise TaskNotFound(f"no task with id {task_id!r} and a callback")
        sent = record.deliveries.get(event)
        if sent is None or sent.state != "failed":
            state = "never made" if sent is None else sent.state
            raise TaskConflict(f"the {event} notice of task {task_id} is {state}, not failed")
        store.set_delivery(task_id, event, Delivery(state="pending", updated_at=utcnow()))
        self._send(task_id, event, notice(record, event), 1, 0.0)

    def announce_cancelled(self, record: TaskRecord) -> None:
        """From the API, after a cancel: raises ServiceUnavailable if the broker is away
        (the cancel stands; a worker queues the notice when it meets the message)."""
        if owes(record.callback, "completed"):
            self._send(record.id, "completed", notice(record, "completed"), 1, 0.0)

    def register_delivery(self, app: Celery, runtime: WorkerRuntime) -> None:
        """The Celery task that makes one delivery attempt and queues the next, if any."""
        settings = runtime.settings

        def deliver(task_id: str, event: Event, body: dict[str, Any], attempt: int) -> None:
            try:
                delay = deliver_once(
                    settings,
                    runtime.store,
                    runtime.webhook_fetcher,
                    task_id=task_id,
                    event=event,
                    body=body,
                    attempt=attempt,
                )
                if delay is not None:
                    self._send(task_id, event, body, attempt + 1, delay)
            except (ServiceUnavailable, SoftTimeLimitExceeded) as exc:
                # Store or broker away, or out of time: the message comes back, the notice
                # waits.
                raise Reject(f"delivery attempt not settled: {exc!r}", requeue=True) from exc

        app.task(
            name=DELIVER_TASK,
            shared=False,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
            soft_time_limit=math.ceil(settings.webhook_timeout_s + 10),
            time_limit=math.ceil(settings.webhook_timeout_s + 20),
        )(deliver)
