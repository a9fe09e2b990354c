"""Publishing one message with every wait bounded: the only way anything is queued."""

from __future__ import annotations

import logging
from typing import Any

from amqp.exceptions import MessageNacked
from celery import Celery
from kombu.exceptions import OperationalError

from asyncml.errors import ServiceUnavailable
from asyncml.settings import Settings

log = logging.getLogger(__name__)

_ARGS_HIDDEN = "(not shown: the task's input)"


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
            # Celery would put a repr of the arguments in the message's headers, where
            # Flower and the broker's management page show them: they are the task's input
            # (a URL may hold a password), and the repr cost a tenth of each publish.
            argsrepr=_ARGS_HIDDEN,
            kwargsrepr="{}",
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
