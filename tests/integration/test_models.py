"""model.iris through the production engine: real API, RabbitMQ, Redis and the models
queue's own worker (a pool of threads that batches), and on the embedded engine."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from asyncml.models import BUNDLED_DIR

from .fixture_server import FixtureServer
from .http_api import wait_final
from .processes import Launcher, ServiceProcess, service_env, wait_until_ready
from .services import free_ports

pytestmark = pytest.mark.usefixtures("models_worker")

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


def _direct(rows: list[dict[str, float]]) -> tuple[list[str], list[list[float]]]:
    session = ort.InferenceSession(
        str(BUNDLED_DIR / "iris" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    table = np.array([list(r.values()) for r in rows], dtype=np.float32)
    labels, probabilities = session.run(["label", "probabilities"], {"input": table})
    return labels.tolist(), probabilities.tolist()


def _flowers(n: int) -> list[dict[str, float]]:
    """n distinct rows, so each task's answer can only be its own."""
    return [
        {
            "sepal_length": 4.5 + (i % 30) / 10,
            "sepal_width": 2.0 + (i % 20) / 10,
            "petal_length": 1.0 + (i % 50) / 10,
            "petal_width": 0.1 + (i % 24) / 10,
        }
        for i in range(n)
    ]


async def _predict_all(base_url: str, rows: list[dict[str, float]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=40) as client:
        return await asyncio.gather(
            *[
                client.post("/v1/tasks/model.iris", json=row, headers={"Prefer": "wait=20"})
                for row in rows
            ]
        )


def _check_batched(responses: list[httpx.Response], rows: list[dict[str, float]]) -> list[int]:
    """Each task got its own row's prediction; the batch sizes the tasks report."""
    labels, probabilities = _direct(rows)
    sizes = []
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text  # final within Prefer: wait
        result = response.json()["result"]
        assert result["predictions"] == [labels[i]]
        assert result["probabilities"][0] == pytest.approx(probabilities[i], abs=1e-6)
        sizes.append(result["batch_size"])
    return sizes


@pytest.mark.timeout(120)
def test_concurrent_predictions_are_batched_and_each_task_gets_its_own_answer(
    stack_env: tuple[dict[str, str], str, Path], api: httpx.Client
) -> None:
    _, base_url, _ = stack_env
    rows = _flowers(64)
    sizes = _check_batched(asyncio.run(_predict_all(base_url, rows)), rows)
    print(f"batch sizes seen by 64 tasks: {sorted(Counter(sizes).items())}")  # for -rP
    assert max(sizes) > 1, sizes  # grouped: more than one task per call of the model
    assert max(sizes) <= 32  # the manifest's max_batch_size
    metrics = httpx.get(f"{base_url}/metrics").text
    assert "asyncml_tasks_submitted_total" in metrics


@pytest.mark.timeout(120)
def test_prefer_wait_is_200_for_a_fast_task_and_202_for_a_slow_one(
    api: httpx.Client, files: FixtureServer
) -> None:
    fast = api.post("/v1/tasks/model.iris", json=FLOWERS[0], headers={"Prefer": "wait=10"})
    assert fast.status_code == 200
    assert fast.json()["status"] == "SUCCESS"
    slow = api.post(
        "/v1/tasks/audio.length",
        json={"audio_url": files.url("gate/tone-5s.wav")},  # held until the gate opens
        headers={"Prefer": "wait=1"},
    )
    assert slow.status_code == 202
    assert slow.json()["status"] in {"QUEUED", "STARTED"}
    files.gate_open.set()
    assert wait_final(api, slow.json()["id"])["status"] == "SUCCESS"


@pytest.mark.timeout(120)
def test_embedded_up_batches_predictions_too(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    launch = Launcher(service_env(data_dir=tmp_path / "data", api_port=port), tmp_path)
    try:
        up: ServiceProcess = launch("up", ["up", "--concurrency", "1"])
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, up)
        rows = _flowers(48)
        sizes = _check_batched(asyncio.run(_predict_all(base_url, rows)), rows)
    finally:
        launch.stop_all()
    print(f"batch sizes seen by 48 tasks: {sorted(Counter(sizes).items())}")  # for -rP
    assert max(sizes) > 1, sizes
