"""The peers scenario's Ray Serve application: echo, iris and the heavy model over HTTP.

Ray Serve's asynchronous inference (a Celery-backed task consumer) needs a broker and its
own processor configuration; the bench uses Ray Serve's documented HTTP deployments,
answered within the request, with `@serve.batch` on the heavy model (up to 32 rows, as
ours). Nothing is queued durably: a request in flight when a replica dies fails, and the
client must send it again.

Run as `python ray_app.py PORT`: a local Ray instance (2 CPUs, no dashboard; each of the
three replicas asks for half a CPU, so all fit on this machine's 2) on loopback,
the application deployed, then " ready." on stdout, then it serves until stopped.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request

MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.005  # heavy_model.MAX_WAIT_MS: ours waits 5 ms for a batch to fill


def _session(path: str) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class Echo:
    async def __call__(self, request: Request) -> Any:
        return await request.json()


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class Iris:
    def __init__(self, path: str) -> None:
        self.session = _session(path)
        self.input = self.session.get_inputs()[0].name

    async def __call__(self, request: Request) -> Any:
        body = await request.json()
        row = [body[k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
        label = self.session.run(None, {self.input: np.array([row], np.float32)})[0]
        return {"label": str(np.asarray(label).ravel()[0])}


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class Heavy:
    def __init__(self, path: str) -> None:
        self.session = _session(path)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def infer(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        out = self.session.run(None, {"input": np.array(rows, np.float32)})[0]
        return [{"variable": float(v[0]), "batch_size": len(rows)} for v in out]

    async def __call__(self, request: Request) -> Any:
        body = await request.json()
        return await self.infer(body["row"])


def _replica_grpc_on_loopback() -> None:
    """Ray Serve 2.60 binds each replica's inter-deployment gRPC server to `[::]:0` (every
    interface, no option in `ray/serve/_private/replica.py`); run in every Ray worker
    before its replica starts, this binds it to 127.0.0.1 instead."""
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server

    def on_loopback(server: Any, address: str) -> int:
        port: int = original(server, address.replace("[::]", "127.0.0.1"))
        return port

    replica.add_port_to_grpc_server = on_loopback


def start_serve_on_loopback(port: int) -> None:
    """A local Ray (2 CPUs, no dashboard) and Serve's HTTP proxy on 127.0.0.1:`port`."""
    import ray

    # Every Ray process on loopback too (GCS, raylet, object store), not the host address
    # (with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which peers.py sets: Ray otherwise turns
    # 127.0.0.1 into the host's address on Linux).
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"worker_process_setup_hook": _replica_grpc_on_loopback},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})


def main(port: int) -> None:
    start_serve_on_loopback(port)
    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    serve.run(Iris.bind(os.environ["BENCH_IRIS_ONNX"]), name="iris", route_prefix="/iris")
    serve.run(Heavy.bind(os.environ["BENCH_HEAVY_ONNX"]), name="heavy", route_prefix="/heavy")
    print("ray serve ready.", flush=True)
    threading.Event().wait()  # serve until the bench stops this process's session


if __name__ == "__main__":
    main(int(sys.argv[1]))
