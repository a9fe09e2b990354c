"""The stock Open Inference Protocol client (tritonclient[http], NVIDIA's) against the real
stack: API, RabbitMQ, Redis and the models queue's batching worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from .processes import ServiceProcess, wait_until_ready
from .services import free_ports

pytestmark = pytest.mark.usefixtures("models_worker")

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
FLOWERS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32
)


@pytest.fixture
def client(
    stack_env: tuple[dict[str, str], str, Path], api: httpx.Client
) -> Iterator[triton.InferenceServerClient]:
    _, base_url, _ = stack_env
    with triton.InferenceServerClient(base_url.removeprefix("http://")) as stock:
        yield stock


def _inputs(table: np.ndarray, *, binary: bool, datatype: str = "FP32") -> list[triton.InferInput]:
    inputs = []
    for column, name in enumerate(FEATURES):
        tensor = triton.InferInput(name, [len(table)], datatype)
        tensor.set_data_from_numpy(
            table[:, column].astype(np.float32 if datatype == "FP32" else np.float64),
            binary_data=binary,
        )
        inputs.append(tensor)
    return inputs


def _v1(api: httpx.Client, table: np.ndarray) -> dict[str, object]:
    rows = [dict(zip(FEATURES, map(float, row), strict=True)) for row in table]
    response = api.post(
        "/v1/tasks/model.iris", json={"instances": rows}, headers={"Prefer": "wait=20"}
    )
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()["result"]
    return result


def test_liveness_readiness_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert not client.is_model_ready("tulip")
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris" and meta["platform"] == "onnxruntime_onnx"
    assert [i["name"] for i in meta["inputs"]] == list(FEATURES)
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "probabilities"]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_infer_with_the_clients_defaults_gives_the_same_predictions_as_v1(
    client: triton.InferenceServerClient, api: httpx.Client
) -> None:
    result = client.infer("iris", _inputs(FLOWERS, binary=True), request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_version"] == "1.0.0"
    assert response["outputs"][0]["parameters"]["binary_data_size"] > 0  # binary came back
    v1 = _v1(api, FLOWERS)
    assert [p.decode() for p in result.as_numpy("predictions")] == v1["predictions"]
    assert result.as_numpy("probabilities").dtype == np.float32
    assert result.as_numpy("probabilities").tolist() == v1["probabilities"]


def test_infer_with_json_data_in_fp64_gives_the_same_predictions(
    client: triton.InferenceServerClient, api: httpx.Client
) -> None:
    outputs = [
        triton.InferRequestedOutput("predictions", binary_data=False),
        triton.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = client.infer("iris", _inputs(FLOWERS, binary=False, datatype="FP64"), outputs=outputs)
    assert "parameters" not in result.get_response()["outputs"][0]  # JSON data, not binary
    v1 = _v1(api, FLOWERS)
    assert result.as_numpy("predictions").tolist() == v1["predictions"]
    assert result.as_numpy("probabilities").tolist() == v1["probabilities"]


def test_a_wrong_datatype_or_shape_is_a_400_with_a_clear_message(
    client: triton.InferenceServerClient,
) -> None:
    wrong_type = _inputs(FLOWERS, binary=True)
    wrong_type[0] = triton.InferInput("sepal_length", [3], "INT32")
    wrong_type[0].set_data_from_numpy(np.array([5, 6, 5], dtype=np.int32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("iris", wrong_type)
    assert refused.value.status() == "400"
    assert "datatype INT32 does not fit feature 'sepal_length'" in refused.value.message()
    wrong_shape = _inputs(FLOWERS, binary=True)
    wrong_shape[1] = triton.InferInput("sepal_width", [1, 3], "FP32")
    wrong_shape[1].set_data_from_numpy(FLOWERS[:, 1].reshape(1, 3))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("iris", wrong_shape)
    assert refused.value.status() == "400"
    assert "shape [1, 3], expected [rows]" in refused.value.message()


def test_respond_async_answers_202_and_the_task_holds_the_v2_response(
    stack_env: tuple[dict[str, str], str, Path], api: httpx.Client
) -> None:
    body = {
        "id": "late-1",
        "inputs": [
            {"name": n, "shape": [1], "datatype": "FP64", "data": [float(FLOWERS[0, i])]}
            for i, n in enumerate(FEATURES)
        ],
    }
    response = api.post("/v2/models/iris/infer", json=body, headers={"Prefer": "respond-async"})
    assert response.status_code == 202
    task = api.get(response.headers["Location"], params={"wait": 20}).json()
    assert task["status"] == "SUCCESS"
    inference = task["result"]["inference"]
    assert inference["id"] == "late-1" and inference["model_name"] == "iris"
    assert inference["outputs"][0] == {
        "name": "predictions",
        "datatype": "BYTES",
        "shape": [1],
        "data": ["setosa"],
    }


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_a_compressed_request_gives_the_same_predictions_as_v1(
    client: triton.InferenceServerClient, api: httpx.Client, algorithm: str
) -> None:
    result = client.infer(
        "iris", _inputs(FLOWERS, binary=True), request_compression_algorithm=algorithm
    )
    v1 = _v1(api, FLOWERS)
    assert [p.decode() for p in result.as_numpy("predictions")] == v1["predictions"]
    assert result.as_numpy("probabilities").tolist() == v1["probabilities"]


@pytest.fixture(scope="module")
def keyed_url(
    tmp_path_factory: pytest.TempPathFactory, stack_env: tuple[dict[str, str], str, Path]
) -> Iterator[str]:
    """An API process with keys on (none made), on the session stack's broker and store."""
    base_env, _, _ = stack_env
    (port,) = free_ports(1)
    process = ServiceProcess(
        f"api-keyed-{port}",
        ["api", "--port", str(port)],
        env=dict(base_env) | {"ASYNCML_AUTH": "on"},
        workdir=tmp_path_factory.mktemp("keyed-v2"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        process.start()
        wait_until_ready(url, process)
        yield url
    finally:
        process.stop()


def test_with_keys_on_the_health_probes_need_no_key_and_metadata_and_infer_do(
    keyed_url: str,
) -> None:
    with triton.InferenceServerClient(keyed_url.removeprefix("http://")) as stock:
        assert stock.is_server_live()
        assert stock.is_server_ready()
        with pytest.raises(InferenceServerException) as refused:
            stock.get_model_metadata("iris")
        assert refused.value.status() == "401"
        with pytest.raises(InferenceServerException) as refused:
            stock.infer("iris", _inputs(FLOWERS, binary=True))
        assert refused.value.status() == "401"
