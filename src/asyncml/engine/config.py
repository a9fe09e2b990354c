"""The Celery configuration: queues, routes and the reliability settings, from settings."""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from asyncml.registry import Registry
from asyncml.settings import Settings

WEBHOOK_QUEUE = "webhooks"
DELIVER_TASK = "asyncml.webhooks.deliver"
# The embedded broker is polled: a worker that holds only the messages it runs waits a
# polling interval for the next one after each task. Holding a few more keeps its pool
# busy; a worker that dies leaves them to the next start's recovery (one host only).
EMBEDDED_PREFETCH = 8


def all_queues(registry: Registry) -> list[str]:
    """The kinds' queues and the engine's own (webhook deliveries)."""
    return sorted({*registry.queues, WEBHOOK_QUEUE})


def broker_url(settings: Settings) -> str:
    """The broker named by the settings, or the embedded one in the data folder."""
    if settings.broker_url is None:
        from asyncml.engine.embedded import broker_url as embedded_url

        return embedded_url(settings.data_dir)
    return settings.broker_url.get_secret_value()


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
        "broker_url": broker_url(settings),
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
        # Three more publishes a task (received, started, succeeded), read only by Flower.
        "worker_send_task_events": settings.worker_task_events and not embedded,
        # No task-sent event from the API: one more publish per submission, and Flower
        # learns of each task from the worker's task-received event anyway.
        "task_send_sent_event": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_channel_error_retry": True,
    }
