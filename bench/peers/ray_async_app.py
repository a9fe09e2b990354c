"""The peers scenario's Ray Serve asynchronous inference: its documented task API on Celery.

Ray Serve 2.50+ ships "asynchronous inference": an ingress deployment enqueues a task
through a `TaskProcessorAdapter` (Celery by default) and answers with its id at once; a
`@task_consumer` deployment runs a Celery worker (a thread pool inside the replica) whose
`@task_handler` methods do the work; the client polls the task's status, which carries the
result once it is done (https://docs.ray.io/en/latest/serve/asynchronous-inference.html).
Here the adapter uses the run's own RabbitMQ as broker and Redis as result backend, the
same servers ours uses, with the adapter's defaults: late acks and reject-on-worker-lost,
so a task whose consumer dies is delivered again.

Celery task handlers must be synchronous, so `@serve.batch` cannot sit on them; the heavy
handler hands its row to a `Heavy` deployment that batches with `@serve.batch` (up to 32
rows, 5 ms, as ours and ray_app.py), through a deployment handle: Ray's own composition.

Routes: `POST /{echo|iris|heavy}/submit` -> `{"task_id"}`; `GET /status/{task_id}` ->
`{"status": "PENDING"|"STARTED"|"SUCCESS"|"FAILURE"|..., "result"}`.

Run as `python ray_async_app.py PORT BROKER_URL BACKEND_URL`: a local Ray instance (2 CPUs,
no dashboard) on loopback, the application deployed, then " ready." on stdout, then it
serves until stopped.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np
from fastapi import Body, FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig
from ray.serve.task_consumer import (
    instantiate_adapter_from_config,
    task_consumer,
    task_handler,
)
from ray_app import BATCH_WAIT_S, MAX_BATCH_SIZE, _session, start_serve_on_loopback

QUEUE = "ray_bench"
CONSUMER_THREADS = 64  # the consumer's Celery thread pool: enough to fill batches of 32
IRIS_FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def _processor_config() -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name=QUEUE,
        adapter_config=CeleryAdapterConfig(
            broker_url=os.environ["BENCH_RAY_BROKER_URL"],
            backend_url=os.environ["BENCH_RAY_BACKEND_URL"],
        ),
        max_retries=0,  # a failure is a failure here, as ours without a retry policy
    )


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class Heavy:
    def __init__(self, path: str) -> None:
        self.session = _session(path)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def __call__(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        out = self.session.run(None, {"input": np.array(rows, np.float32)})[0]
        return [{"variable": float(v[0]), "batch_size": len(rows)} for v in out]


@serve.deployment(max_ongoing_requests=CONSUMER_THREADS, ray_actor_options={"num_cpus": 0.5})
@task_consumer(task_processor_config=_processor_config())
class Consumer:
    def __init__(self, iris_path: str, heavy: DeploymentHandle) -> None:
        self.iris = _session(iris_path)
        self.iris_input = self.iris.get_inputs()[0].name
        self.heavy = heavy

    @task_handler(name="echo")
    def echo(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    @task_handler(name="iris")
    def iris_predict(self, body: dict[str, Any]) -> dict[str, Any]:
        row = np.array([[body[k] for k in IRIS_FIELDS]], np.float32)
        label = self.iris.run(None, {self.iris_input: row})[0]
        return {"label": str(np.asarray(label).ravel()[0])}

    @task_handler(name="heavy")
    def heavy_predict(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.heavy.remote(body["row"]).result()
        return result


api = FastAPI()


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class Ingress:
    def __init__(self) -> None:
        self.adapter = instantiate_adapter_from_config(_processor_config())

    # Plain `def` routes: the Celery adapter's calls block, so FastAPI runs them in its
    # thread pool, as Ray's asynchronous-inference example does.
    @api.post("/{kind}/submit")
    def submit(self, kind: str, body: dict[str, Any] = Body(...)) -> dict[str, str]:  # noqa: B008
        return {"task_id": self.adapter.enqueue_task_sync(kind, args=[body]).id}

    @api.get("/status/{task_id}")
    def status(self, task_id: str) -> dict[str, Any]:
        task = self.adapter.get_task_status_sync(task_id)
        result = task.result if task.status == "SUCCESS" else None
        return {"status": task.status, "result": result}


def main(port: int) -> None:
    start_serve_on_loopback(port)
    heavy = Heavy.bind(os.environ["BENCH_HEAVY_ONNX"])
    serve.run(
        Consumer.bind(os.environ["BENCH_IRIS_ONNX"], heavy), name="consumer", route_prefix=None
    )
    serve.run(Ingress.bind(), name="ingress", route_prefix="/")
    print("ray serve async ready.", flush=True)
    threading.Event().wait()  # serve until the bench stops this process's session


if __name__ == "__main__":
    main(int(sys.argv[1]))
