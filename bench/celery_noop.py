"""The engine ceiling: a Celery no-op task on the same RabbitMQ and Redis as the service.

Configured like the service's engine where it costs time (persistent messages, publisher
confirms, late acks, prefetch 1), with Celery's own Redis result backend carrying the
result, so a round trip is publish -> worker -> result in Redis -> client: the least any
task can cost on this broker and store.

The worker is `celery -A celery_noop worker`, run with bench/ as its working directory.
"""

from __future__ import annotations

import os

from celery import Celery

QUEUE = "bench_noop"
TASK = "bench.noop"


def make_app(broker_url: str, backend_url: str) -> Celery:
    """The no-op's app on these servers (the worker's, from its environment, is `app`)."""
    made = Celery("bench_noop", broker=broker_url, backend=backend_url, set_as_current=False)
    made.conf.update(
        broker_transport_options={"confirm_publish": True},
        task_default_queue=QUEUE,
        task_default_delivery_mode="persistent",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        result_expires=600,
    )
    return made


app = make_app(
    os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    os.environ.get("BENCH_BACKEND_URL", "redis://127.0.0.1:6379/0"),
)


@app.task(name=TASK)
def noop() -> None:
    return None
