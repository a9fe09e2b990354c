"""model.<name> kinds through the HTTP API: 422 before queueing, schema, and the result."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from asyncml.client import Task
from asyncml.engine.runtime import WorkerRuntime
from asyncml.models import BUNDLED_DIR, CACHE, PredictionOut, preload, served_specs
from asyncml.registry import build_registry
from asyncml.settings import Settings
from asyncml.store import TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_model_kind_is_listed_with_its_generated_input_schema(client: TestClient) -> None:
    kinds = {k["name"]: k for k in client.get("/v1/kinds").json()}
    iris = kinds["model.iris"]
    assert iris["queue"] == "models"
    assert set(iris["input_schema"]["properties"]) == {*FLOWER, "instances", "version", "inference"}
    assert set(iris["output_schema"]["properties"]) == {
        "model",
        "version",
        "predictions",
        "probabilities",
        "batch_size",
        "inference",
    }


def test_model_kind_has_its_own_documented_route(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/tasks/model.iris"]["post"]
    assert operation["operationId"] == "submit_model_iris"
    assert "sepal_length (float)" in operation["description"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**FLOWER, "sepal_length": "5.1"}, "sepal_length"),
        ({**FLOWER, "petal_width": -0.2}, "petal_width"),
        ({**FLOWER, "petal_width": 31}, "petal_width"),
        ({k: v for k, v in FLOWER.items() if k != "sepal_width"}, "missing features: sepal_width"),
        ({**FLOWER, "colour": "blue"}, "colour"),
        ({"instances": [{**FLOWER, "extra": 1}]}, "extra"),
        ({"instances": [FLOWER] * 101}, "instances"),
        ({**FLOWER, "instances": [FLOWER]}, "not both"),
    ],
)
def test_invalid_model_input_is_422_and_queues_nothing(
    client: TestClient, queued_messages: Callable[[], int], body: dict[str, Any], says: str
) -> None:
    response = client.post("/v1/tasks/model.iris", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "input_invalid"
    assert says in response.text
    assert queued_messages() == 0


def test_valid_rows_are_queued(client: TestClient, queued_messages: Callable[[], int]) -> None:
    assert client.post("/v1/tasks/model.iris", json=FLOWER).status_code == 202
    assert client.post("/v1/tasks/model.iris", json={"instances": [FLOWER] * 3}).status_code == 202
    assert queued_messages() == 2


def test_a_task_run_by_a_worker_records_predictions_and_the_model_version(
    client: TestClient, settings: Settings, store: SqliteTaskStore
) -> None:
    rows = [FLOWER, {**FLOWER, "petal_length": 5.2, "petal_width": 2.3}]
    task = client.post("/v1/tasks/model.iris", json={"instances": rows}).json()
    runtime = WorkerRuntime(settings, store_retry_s=0.2)
    runtime.execute(build_registry(settings).get("model.iris"), task["id"], {"instances": rows})
    runtime.store.close()
    record = client.get(f"/v1/tasks/{task['id']}").json()
    session = ort.InferenceSession(
        str(BUNDLED_DIR / "iris" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    table = np.array([list(r.values()) for r in rows], dtype=np.float32)
    labels, probabilities = session.run(None, {"input": table})
    assert record["status"] == TaskStatus.SUCCESS.value
    assert record["result"] == {
        "model": "iris",
        "version": "1.0.0",
        "predictions": labels.tolist(),
        "probabilities": probabilities.tolist(),
        "batch_size": 2,
    }


def test_a_model_that_will_not_load_in_the_worker_fails_its_task_as_data(
    settings: Settings, store: SqliteTaskStore
) -> None:
    folder = settings.models_path() / "flaky"
    shutil.copytree(BUNDLED_DIR / "iris", folder)
    toml = folder / "model.toml"
    toml.write_text(toml.read_text().replace('name = "iris"', 'name = "flaky"'))
    kind = build_registry(settings).get("model.flaky")
    (folder / "model.onnx").write_bytes(b"replaced by something broken after start-up")
    store.create(
        TaskRecord(id="t1", kind=kind.name, status=TaskStatus.QUEUED, submitted_at=utcnow())
    )
    runtime = WorkerRuntime(settings, store_retry_s=0.2)
    runtime.execute(kind, "t1", FLOWER)
    runtime.store.close()
    record = store.get("t1")
    assert record is not None and record.status is TaskStatus.FAILURE
    assert record.error is not None and record.error.type == "model_unavailable"
    assert "flaky 1.0.0 cannot be loaded" in record.error.message


def test_preload_loads_only_the_models_of_the_queues_served(settings: Settings) -> None:
    registry = build_registry(settings)
    (spec,) = served_specs(registry)
    CACHE.clear()
    preload(registry, ["audio", "euro"])
    assert spec not in CACHE
    preload(registry, ["models"])
    assert spec in CACHE


def test_sdk_gives_a_model_result_as_its_typed_output() -> None:
    task = Task.model_validate(
        {
            "id": "t1",
            "kind": "model.iris",
            "status": "SUCCESS",
            "submitted_at": "2024-01-01T00:00:00Z",
            "result": {
                "model": "iris",
                "version": "1.0.0",
                "predictions": ["setosa"],
                "probabilities": None,
                "batch_size": 1,
            },
        }
    )
    out = task.output()
    assert isinstance(out, PredictionOut) and out.predictions == ["setosa"]
