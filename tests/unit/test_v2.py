"""/v2 (Open Inference Protocol) before anything runs: metadata, errors in the protocol's
shape, refusals before queueing, the binary codec, and the canary split's arithmetic."""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http._utils import _get_inference_request

from asyncml.api import create_app
from asyncml.auth import key_file_line, make_key
from asyncml.models import TensorInvalid, pick
from asyncml.models.inputs import InferenceOptions
from asyncml.models.kinds import PredictionOut
from asyncml.models.loaders import OutputTypes
from asyncml.models.oip import encode_response, inference_response, parse_request
from asyncml.settings import Settings

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def _body(
    inputs: list[InferInput], outputs: list[InferRequestedOutput] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A request body exactly as the stock tritonclient builds it."""
    body, json_size = _get_inference_request(
        inputs=inputs,
        request_id="r-1",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        custom_parameters=None,
    )
    headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}
    return body, headers


def _flower_inputs(
    rows: int = 1, datatype: str = "FP32", binary: bool = True, shape: list[int] | None = None
) -> list[InferInput]:
    inputs = []
    for i, name in enumerate(FEATURES):
        tensor = InferInput(name, shape or [rows], datatype)
        data = np.full(shape or [rows], 1.0 + i, dtype=np.float32 if datatype == "FP32" else None)
        if datatype == "INT32":
            data = data.astype(np.int32)
        tensor.set_data_from_numpy(data, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_server_and_model_metadata_describe_iris(client: TestClient) -> None:
    server = client.get("/v2").json()
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get("/v2/models/iris").json()
    assert meta["name"] == "iris" and meta["versions"] == ["1.0.0"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert [i["name"] for i in meta["inputs"]] == list(FEATURES)
    assert meta["outputs"] == [
        {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert client.get("/v2/models/iris/versions/1.0.0").json() == meta


def test_unknown_model_or_version_is_404_in_the_protocols_shape(client: TestClient) -> None:
    unknown = client.get("/v2/models/tulip")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "unknown model 'tulip'; served: iris"}
    version = client.post("/v2/models/iris/versions/7/infer", json={"inputs": []})
    assert version.status_code == 404
    assert "no version '7'" in version.json()["error"]


def test_the_rest_of_the_api_keeps_its_own_error_shape(client: TestClient) -> None:
    assert set(client.get("/v1/tasks/nope").json()) == {"type", "message"}


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        (_flower_inputs(datatype="INT32"), "datatype INT32 does not fit feature 'sepal_length'"),
        (_flower_inputs(shape=[1, 2]), "shape [1, 2], expected [rows]"),
        (_flower_inputs()[:3], "missing inputs ['petal_width']"),
    ],
)
def test_a_tensor_that_does_not_fit_is_400_and_queues_nothing(
    client: TestClient,
    queued_messages: Callable[[], int],
    inputs: list[InferInput],
    says: str,
) -> None:
    body, headers = _body(inputs)
    response = client.post("/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]
    assert queued_messages() == 0


def test_an_out_of_bounds_value_is_400_naming_the_feature(client: TestClient) -> None:
    inputs = _flower_inputs()
    inputs[3].set_data_from_numpy(np.array([-1.0], dtype=np.float32))
    body, headers = _body(inputs)
    response = client.post("/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "petal_width" in response.json()["error"]


def test_binary_data_past_the_body_is_400(client: TestClient) -> None:
    body, headers = _body(_flower_inputs())
    response = client.post("/v2/models/iris/infer", content=body[:-3], headers=headers)
    assert response.status_code == 400
    assert "binary_data_size" in response.json()["error"]


def test_a_json_syntax_error_is_400_in_the_words_of_v1(client: TestClient) -> None:
    body = b'{"inputs": [\n  {"name": "sepal_length",}\n]}'
    headers = {"Content-Type": "application/json"}
    v2 = client.post("/v2/models/iris/infer", content=body, headers=headers)
    v1 = client.post("/v1/tasks/model.iris", content=body, headers=headers)
    assert v2.status_code == 400
    assert v2.json() == {"error": "invalid JSON at line 2, column 27: trailing comma"}
    assert v1.json()["message"] == v2.json()["error"]


@pytest.fixture
def alice(tmp_path: Path) -> str:
    """A key, provisioned in the keys file ``keyed_client`` reads."""
    key, record = make_key("alice")
    (tmp_path / "keys").write_text(key_file_line(record))
    return key


@pytest.fixture
def keyed_client(tmp_path: Path, alice: str) -> Iterator[TestClient]:
    """Keys on: a request without a valid key is refused where a key is needed."""
    settings = Settings(
        _env_file=None, data_dir=tmp_path / "data", auth="on", api_keys_file=tmp_path / "keys"
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_health_probes_answer_without_a_key_when_keys_are_on(keyed_client: TestClient) -> None:
    assert keyed_client.get("/v2/health/live").json() == {"live": True}
    assert keyed_client.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2"),
        ("GET", "/v2/models/iris"),
        ("GET", "/v2/models/iris/ready"),
        ("POST", "/v2/models/iris/infer"),
        ("POST", "/v2/models/iris/versions/1.0.0/infer"),
    ],
)
def test_metadata_and_infer_need_a_key(
    keyed_client: TestClient, alice: str, method: str, path: str
) -> None:
    body, headers = _body(_flower_inputs())
    refused = keyed_client.request(method, path, content=body, headers=headers)
    assert refused.status_code == 401
    assert set(refused.json()) == {"error"}
    headers |= {"Authorization": f"Bearer {alice}", "Prefer": "respond-async"}
    assert keyed_client.request(method, path, content=body, headers=headers).status_code in (
        200,
        202,
    )


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
def test_a_compressed_body_is_inflated_and_queued(
    client: TestClient,
    queued_messages: Callable[[], int],
    encoding: str,
    compress: Callable[[bytes], bytes],
) -> None:
    body, headers = _body(_flower_inputs(rows=2))
    headers |= {"Content-Encoding": encoding, "Prefer": "respond-async"}
    response = client.post("/v2/models/iris/infer", content=compress(body), headers=headers)
    assert response.status_code == 202, response.text
    assert queued_messages() == 1


def test_a_compressed_body_inflating_past_the_body_limit_is_413_and_queues_nothing(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    bomb = gzip.compress(b"{" + b" " * 50_000_000 + b"}")  # 50 MB in ~50 kB
    response = client.post(
        "/v2/models/iris/infer", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "error": "request body over the limit of 1048576 bytes once inflated"
    }
    assert queued_messages() == 0


def test_a_cut_short_gzip_body_is_400(client: TestClient) -> None:
    body, headers = _body(_flower_inputs())
    cut = gzip.compress(body)[:-12]
    response = client.post(
        "/v2/models/iris/infer", content=cut, headers={**headers, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "the gzip body is cut short"}


def test_an_unknown_content_encoding_is_415_naming_what_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/v2/models/iris/infer", content=b"...", headers={"Content-Encoding": "br"}
    )
    assert response.status_code == 415
    assert response.json() == {
        "error": "Content-Encoding 'br' is not accepted; send gzip, deflate or identity"
    }


def test_respond_async_is_202_with_the_tasks_location(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    body, headers = _body(_flower_inputs(rows=2))
    response = client.post(
        "/v2/models/iris/infer", content=body, headers={**headers, "Prefer": "respond-async"}
    )
    assert response.status_code == 202
    location = response.headers["Location"]
    assert location == f"/v1/tasks/{response.json()['id']}"
    task = client.get(location).json()
    assert task["kind"] == "model.iris" and task["status"] == "QUEUED"
    assert queued_messages() == 1


def test_binary_request_values_are_read_as_tritonclient_wrote_them() -> None:
    tensors = _flower_inputs(rows=3)
    strings = InferInput("plan", [2], "BYTES")
    strings.set_data_from_numpy(np.array([b"basic", "prö".encode()], dtype=np.object_))
    flags = InferInput("flag", [2], "BOOL")
    flags.set_data_from_numpy(np.array([True, False]))
    body, headers = _body([*tensors, strings, flags])
    request, values = parse_request(body, headers["Inference-Header-Content-Length"])
    assert request.id == "r-1"
    assert values[:4] == [[1.0] * 3, [2.0] * 3, [3.0] * 3, [4.0] * 3]
    assert values[4:] == [["basic", "prö"], [True, False]]


@pytest.mark.parametrize(
    ("datatype", "data", "says"),
    [
        ("FP64", [1.5, True], "input 'x': true is not a FP64 value"),
        ("INT64", [[1], [2.5]], "input 'x': 2.5 is not a INT64 value"),
        ("BOOL", [True, 0], "input 'x': 0 is not a BOOL value"),
        ("BYTES", ["basic", 1], "input 'x': 1 is not a BYTES value"),
    ],
)
def test_a_json_value_of_another_type_than_its_datatype_is_refused(
    datatype: str, data: list[Any], says: str
) -> None:
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": datatype, "data": data}]}
    with pytest.raises(TensorInvalid) as refused:
        parse_request(json.dumps(body).encode(), None)
    assert refused.value.message == says


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_binary_nan_or_infinity_is_refused(value: float) -> None:
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, value], dtype=np.float32), binary_data=True)
    body, headers = _body([tensor])
    with pytest.raises(TensorInvalid) as refused:
        parse_request(body, headers["Inference-Header-Content-Length"])
    assert refused.value.message == "input 'x': NaN and infinities are refused"


def test_a_binary_response_decodes_with_tritonclient() -> None:
    from tritonclient.http import InferResult

    out = PredictionOut(
        model="iris",
        version="2",
        predictions=["setosa", "virginica"],
        probabilities=[[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]],
        batch_size=2,
    )
    response = inference_response(out, OutputTypes("BYTES", "FP32"), InferenceOptions(id="x"))
    body, length = encode_response(response, {"predictions", "probabilities"})
    result = InferResult.from_response_body(body, header_length=length)
    assert result.get_response()["model_version"] == "2"
    assert result.as_numpy("predictions").tolist() == [b"setosa", b"virginica"]
    assert result.as_numpy("probabilities").dtype == np.float32
    assert np.allclose(result.as_numpy("probabilities"), out.probabilities or [])
    as_json, none = encode_response(response, set())
    assert none is None and json.loads(as_json)["outputs"][0]["data"] == ["setosa", "virginica"]


def test_ten_thousand_random_draws_land_within_two_points_of_the_split() -> None:
    split = {"1": 0.9, "2": 0.1}
    counts = Counter(pick(split) for _ in range(10_000))
    assert abs(counts["2"] / 10_000 - 0.10) <= 0.02, counts
    assert abs(counts["1"] / 10_000 - 0.90) <= 0.02, counts


def test_ten_thousand_keys_land_within_two_points_and_a_key_keeps_its_version() -> None:
    split = {"1": 0.9, "2": 0.1}
    draws: dict[str, Any] = {f"key-{i}": pick(split, f"key-{i}") for i in range(10_000)}
    share = sum(v == "2" for v in draws.values()) / 10_000
    assert abs(share - 0.10) <= 0.02, share
    assert all(pick(split, key) == version for key, version in list(draws.items())[:500])
