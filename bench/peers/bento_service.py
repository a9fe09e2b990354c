"""The peers scenario's BentoML service: echo, iris and the heavy model as `@bentoml.task`.

Served by `bentoml serve bento_service:Peers` (BentoML's own server), driven through its
task endpoints: `POST /<name>/submit`, `GET /<name>/status?task_id=`, `GET /<name>/get`.
A task runs as a background task of the HTTP worker that took the submit; its record lives
in that worker's local result store: nothing is queued durably, and a worker killed
mid-task loses it. The heavy model is `batchable=True` (BentoML's adaptive batching, up
to 32 rows, as ours). Paths of the ONNX files come from BENCH_IRIS_ONNX, BENCH_HEAVY_ONNX.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np

MAX_BATCH_SIZE = 32  # heavy_model.MAX_BATCH_SIZE: the same cap as our batcher's
# BentoML's adaptive batcher answers 503 to a request it expects to wait longer than this
# (at 200 ms, 64 clients shed most heavy rows here: a batch of 32 takes ~160 ms); ours
# queues instead, so the bound is set past any wait of the run.
MAX_LATENCY_MS = 30_000


def _session(path: str) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # as ours and the in-process ceilings
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@bentoml.service(workers=1, threads=16, traffic={"timeout": 60})
class Peers:
    def __init__(self) -> None:
        self.iris_session = _session(os.environ["BENCH_IRIS_ONNX"])
        self.iris_input = self.iris_session.get_inputs()[0].name
        self.heavy_session = _session(os.environ["BENCH_HEAVY_ONNX"])

    @bentoml.task
    def echo(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @bentoml.task
    def iris_predict(
        self, sepal_length: float, sepal_width: float, petal_length: float, petal_width: float
    ) -> dict[str, Any]:
        row = np.array([[sepal_length, sepal_width, petal_length, petal_width]], np.float32)
        label = self.iris_session.run(None, {self.iris_input: row})[0]
        return {"label": str(np.asarray(label).ravel()[0])}

    @bentoml.task(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def heavy(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.heavy_session.run(None, {"input": rows.astype(np.float32)})[0]
        return out
