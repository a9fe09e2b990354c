"""Model versions, the canary split and MLflow folders, served for real on both engines
(embedded ``asyncml up``; ``asyncml api`` + a models worker on RabbitMQ and Redis).

The MLflow folders are written by MLflow's own ``save_model`` (mlflow-skinny, a test
dependency); the service reads them without importing MLflow.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from asyncml.models import BUNDLED_DIR

from .processes import Launcher, service_env, wait_until_ready
from .services import free_ports

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _versioned(models: Path) -> None:
    """models/flowers/1 and 2 (the iris example under another name), split 50/50."""
    for version in ("1", "2"):
        folder = models / "flowers" / version
        shutil.copytree(BUNDLED_DIR / "iris", folder)
        toml = folder / "model.toml"
        text = toml.read_text().replace('name = "iris"', 'name = "flowers"')
        toml.write_text(text.replace('version = "1.0.0"\n', ""))
    (models / "flowers" / "model.toml").write_text("[traffic]\n1 = 50\n2 = 50\n")


def _mlflow_folders(models: Path, trusted: Path) -> None:
    """An ONNX flavour (tensor signature), a skops sklearn flavour in the models folder, a
    cloudpickle sklearn flavour with int, bool and string columns in a trusted folder and
    the same untrusted."""
    import onnx
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's own import-time warnings
        import mlflow.onnx
        import mlflow.sklearn
        from mlflow.models import infer_signature

        table = np.array([list(FLOWER.values())], dtype=np.float32)
        mlflow.onnx.save_model(
            onnx.load(str(BUNDLED_DIR / "iris" / "model.onnx")),
            str(models / "iris_onnx"),
            signature=infer_signature(table),
        )
        frame = pd.DataFrame(
            {
                "age": np.array([20, 35, 50, 65, 30, 45], dtype=np.int64),
                "member": [True, False, True, False, False, True],
                "plan": ["basic", "pro", "pro", "basic", "basic", "pro"],
                "spend": [1.0, 20.5, 3.25, 40.0, 2.0, 30.0],
            }
        )
        labels = np.array([0, 1, 0, 1, 0, 1])
        # Rows arrive as one object array in signature order: columns are picked by position.
        mixed = make_pipeline(
            ColumnTransformer([("plan", OneHotEncoder(), [2])], remainder="passthrough"),
            LogisticRegression(),
        ).fit(frame.to_numpy(dtype=object), labels)
        signature = infer_signature(frame, labels)
        for root in (trusted, models):
            mlflow.sklearn.save_model(
                mixed, str(root / "churn"), signature=signature, serialization_format="cloudpickle"
            )


@pytest.fixture(params=["embedded", "rabbitmq-redis"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """The service over a models folder of versions and MLflow folders; yields its URL,
    the models folder and the engine."""
    models, trusted = tmp_path / "models", tmp_path / "trusted"
    models.mkdir()
    trusted.mkdir()
    _versioned(models)
    _mlflow_folders(models, trusted)
    shutil.move(str(models / "churn"), str(models / "churn_untrusted"))
    shutil.move(str(trusted / "churn"), str(models / "churn"))
    (port,) = free_ports(1)
    urls: dict[str, str] = {}
    if request.param == "rabbitmq-redis":
        urls = {
            "broker_url": request.getfixturevalue("rabbitmq_url"),
            "backend_url": request.getfixturevalue("redis_url"),
        }
    env = service_env(
        data_dir=tmp_path / "data",
        api_port=port,
        extra={
            "ASYNCML_MODELS_DIR": str(models),
            "ASYNCML_MODELS_TRUST_PICKLE_DIRS": f'["{models / "churn"}"]',
        },
        broker_url=urls.get("broker_url"),
        backend_url=urls.get("backend_url"),
    )
    launch = Launcher(env, tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    try:
        if urls:
            api = launch("api", ["api"])
            worker = launch("worker-models", ["worker", "--queues", "models"])
            worker.wait_for_line(" ready.")
        else:
            api = worker = launch("up", ["up", "--concurrency", "1"])
        wait_until_ready(base_url, api)
        yield base_url, models, request.param
    finally:
        launch.stop_all()


def _predict(client: httpx.Client, kind: str, body: Mapping[str, object]) -> dict[str, Any]:
    response = client.post(f"/v1/tasks/{kind}", json=body, headers={"Prefer": "wait=20"})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def _until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout:g} s")
        time.sleep(0.2)  # polling interval, bounded by the deadline


@pytest.mark.timeout(240)
def test_versions_split_and_mlflow_folders_are_served(
    service: tuple[str, Path, str],
) -> None:
    base_url, models, engine = service
    with httpx.Client(base_url=base_url, timeout=40) as client:
        # An explicit version, on /v1 and on /v2, and the version that answered.
        assert _predict(client, "model.flowers", {**FLOWER, "version": "2"})["version"] == "2"
        unknown = client.post("/v1/tasks/model.flowers", json={**FLOWER, "version": "9"})
        assert unknown.status_code == 422 and "no version '9'" in unknown.json()["message"]
        meta = client.get("/v2/models/flowers/versions/1").json()
        assert meta["versions"] == ["2", "1"] and meta["parameters"]["version"] == "1"
        # The canary split, end to end: unversioned requests reach both versions.
        seen = Counter(str(_predict(client, "model.flowers", FLOWER)["version"]) for _ in range(24))
        assert set(seen) == {"1", "2"}, seen
        # The same Idempotency-Key lands on the same version on /v2.
        body = {
            "inputs": [
                {"name": k, "shape": [1], "datatype": "FP64", "data": [v]}
                for k, v in FLOWER.items()
            ]
        }
        versions = {
            client.post(
                "/v2/models/flowers/infer", json=body, headers={"Idempotency-Key": "sticky"}
            ).json()["model_version"]
            for _ in range(3)
        }
        assert len(versions) == 1
        # MLflow folders: ONNX with a tensor signature, sklearn cloudpickle when trusted.
        onnx_row = {f"input_{i}": v for i, v in enumerate(FLOWER.values())}
        assert _predict(client, "model.iris_onnx", onnx_row)["predictions"] == ["setosa"]
        churn_row = {"age": 60, "member": False, "plan": "basic", "spend": 39.0}
        churn = _predict(client, "model.churn", churn_row)
        assert churn["predictions"] in ([0], [1]) and churn["probabilities"] is not None
        assert client.get("/v2/models/churn_untrusted").status_code == 404
        # Datatypes of a mixed model through the stock client: INT64, BOOL, BYTES, FP64.
        stock = triton.InferenceServerClient(base_url.removeprefix("http://"))
        inputs = []
        for name, datatype, values in (
            ("age", "INT64", np.array([60], dtype=np.int64)),
            ("member", "BOOL", np.array([False])),
            ("plan", "BYTES", np.array([b"basic"], dtype=np.object_)),
            ("spend", "FP64", np.array([39.0])),
        ):
            tensor = triton.InferInput(name, [1], datatype)
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
        answer = stock.infer("churn", inputs)
        assert answer.as_numpy("predictions").tolist() == churn["predictions"]
        age32 = triton.InferInput("age", [1], "INT32")
        age32.set_data_from_numpy(np.array([60], dtype=np.int32))
        assert (
            stock.infer("churn", [age32, *inputs[1:]]).as_numpy("predictions").tolist()
            == (churn["predictions"])
        )
        stock.close()
        # A version folder added while serving is picked up; removed, it goes.
        shutil.copytree(models / "flowers" / "2", models / "flowers" / "3")
        _until(
            "version 3",
            lambda: "3" in client.get("/v2/models/flowers").json()["versions"],
        )
        _until(
            "version 3 answering",
            lambda: (
                client.post(
                    "/v1/tasks/model.flowers",
                    json={**FLOWER, "version": "3"},
                    headers={"Prefer": "wait=20"},
                )
                .json()
                .get("result", {})
                .get("version")
                == "3"
            ),
        )
        shutil.rmtree(models / "flowers" / "3")
        _until(
            "version 3 gone",
            lambda: client.get("/v2/models/flowers").json()["versions"] == ["2", "1"],
        )
    if engine == "embedded":  # asyncml up exports its worker's series on the API's /metrics
        text = httpx.get(f"{base_url}/metrics").text
        for version in ("1", "2"):
            assert f'asyncml_model_predictions_total{{model="flowers",version="{version}"}}' in text
