"""model.iris through the production engine: real API, RabbitMQ, Redis and a worker."""

from __future__ import annotations

import httpx
import numpy as np
import onnxruntime as ort
from http_api import wait_final

from asyncml.models import BUNDLED_DIR

FLOWERS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5},
]


def test_predictions_through_the_stack_equal_onnxruntime_called_directly(
    api: httpx.Client,
) -> None:
    response = api.post("/v1/tasks/model.iris", json={"instances": FLOWERS})
    assert response.status_code == 202, response.text
    task = wait_final(api, response.json()["id"])
    session = ort.InferenceSession(
        str(BUNDLED_DIR / "iris" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    table = np.array([list(f.values()) for f in FLOWERS], dtype=np.float32)
    labels, probabilities = session.run(["label", "probabilities"], {"input": table})
    assert task["status"] == "SUCCESS", task
    assert task["result"] == {
        "model": "iris",
        "version": "1.0.0",
        "predictions": labels.tolist(),
        "probabilities": probabilities.tolist(),
        "batch_size": 3,
    }


def test_out_of_bounds_row_is_refused_by_the_api_before_queueing(api: httpx.Client) -> None:
    response = api.post("/v1/tasks/model.iris", json={**FLOWERS[0], "petal_width": -1})
    assert response.status_code == 422
    assert "petal_width" in response.json()["message"]
