"""The Open Inference Protocol (KServe/Triton "V2") as data: requests in, rows out, and
predictions back as the protocol's response, in JSON or with the binary tensor extension.

The codec is the models package's, not the API's: the worker writes the protocol's response
into the result of a task submitted through /v2 (so a task answered later reads the same as
one answered at once), and the API only re-encodes it when the client asked for binary data.

A request carries one tensor per feature, named like it, of shape ``[rows]`` or ``[rows,
1]``, or (all features numeric) one ``[rows, features]`` tensor. Outputs are
``predictions`` (``[rows]``, or ``[rows, k]``) and ``probabilities`` (``[rows, classes]``).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from asyncml.errors import describe_errors
from asyncml.models.errors import TensorInvalid
from asyncml.models.inputs import InferenceOptions
from asyncml.models.loaders import OutputTypes
from asyncml.models.manifest import FeatureType, Manifest

if TYPE_CHECKING:
    from asyncml.models.kinds import PredictionOut

HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = ("predictions", "probabilities")
# Little-endian numpy types of the fixed-size datatypes (the binary extension's layout).
NUMPY: dict[str, str] = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_ACCEPTS: dict[FeatureType, frozenset[str]] = {
    "float": frozenset({"FP16", "FP32", "FP64"}),
    "int": frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}),
    "bool": frozenset({"BOOL"}),
    "string": frozenset({"BYTES"}),
}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestOutput(_Open):
    name: str = Field(max_length=64)
    parameters: dict[str, Any] = Field(default_factory=dict)


class RequestInput(_Open):
    name: str = Field(max_length=64)
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class InferRequest(_Open):
    id: str | None = Field(default=None, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1, max_length=256)
    outputs: list[RequestOutput] | None = Field(default=None, max_length=8)


# The Python types of the JSON values each datatype takes (as orjson decodes them: exact
# types, bool apart from int).
_JSON_TYPES: dict[str, frozenset[type]] = {
    **{name: frozenset({int}) for name in NUMPY if name.startswith(("INT", "UINT"))},
    **{name: frozenset({int, float}) for name in NUMPY if name.startswith("FP")},
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
}


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if list not in set(map(type, data)):
        return data  # flat already: the common case, without a copy
    return [v for item in data for v in _flatten(item)]


def _read_bytes_elements(raw: bytes, name: str) -> list[str]:
    """BYTES in the binary layout: each element a 4-byte little-endian length, then it."""
    values: list[str] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise TensorInvalid(f"input {name!r}: truncated BYTES element")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise TensorInvalid(f"input {name!r}: truncated BYTES element")
        try:
            values.append(raw[at : at + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise TensorInvalid(f"input {name!r}: a BYTES element is not UTF-8 text") from None
        at += size
    return values


def _json_values(tensor: RequestInput) -> list[Any]:
    """The JSON data's values, each of a type the datatype takes (compared as a set of
    types: per-value checks in Python cost a model of 32 features ~0.2 ms a request).

    No NaN or infinity can be among them: orjson refuses ``NaN`` and ``1e999``.
    """
    values = _flatten(tensor.data)
    allowed = _JSON_TYPES[tensor.datatype]
    if not set(map(type, values)) <= allowed:
        wrong = next(v for v in values if type(v) not in allowed)
        raise TensorInvalid(
            f"input {tensor.name!r}: {json.dumps(wrong)[:40]} is not a {tensor.datatype} value"
        )
    return values


def tensor_values(tensor: RequestInput, raw: bytes | None) -> list[Any]:
    """The tensor's elements, flat, as Python values; the count checked against its shape."""
    if tensor.datatype != "BYTES" and tensor.datatype not in NUMPY:
        raise TensorInvalid(
            f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}; known: "
            f"{', '.join([*NUMPY, 'BYTES'])}"
        )
    if min(tensor.shape, default=0) < 0:
        raise TensorInvalid(f"input {tensor.name!r}: shape {tensor.shape} has a negative size")
    if raw is None:
        if tensor.data is None:
            raise TensorInvalid(f"input {tensor.name!r}: no data (neither JSON nor binary)")
        values = _json_values(tensor)
    elif tensor.datatype == "BYTES":
        values = _read_bytes_elements(raw, tensor.name)
    else:  # binary numbers: the only way NaN or an infinity comes in
        dtype = np.dtype(NUMPY[tensor.datatype])
        if len(raw) % dtype.itemsize:
            raise TensorInvalid(
                f"input {tensor.name!r}: {len(raw)} bytes is not a whole number of "
                f"{tensor.datatype} elements"
            )
        array = np.frombuffer(raw, dtype=dtype)
        if dtype.kind == "f" and not np.isfinite(array).all():
            raise TensorInvalid(f"input {tensor.name!r}: NaN and infinities are refused")
        values = array.tolist()
    expected = math.prod(tensor.shape)
    if len(values) != expected:
        raise TensorInvalid(
            f"input {tensor.name!r}: shape {tensor.shape} holds {expected} elements, "
            f"the data has {len(values)}"
        )
    return values


def _json(head: bytes) -> Any:
    """The request's JSON, decoded by orjson; a syntax error is told in /v1's words.

    /v1 (FastAPI) decodes with the standard library and describes its error by line and
    column (``describe_errors``); the standard decoder reads the faulty text again here so
    both routes word it the same. Text only orjson refuses (NaN, a 65-bit integer) is told
    by orjson's own reason and position.
    """
    try:
        return orjson.loads(head)
    except orjson.JSONDecodeError as fast:
        fault: json.JSONDecodeError = fast
        try:
            json.loads(head)
        except json.JSONDecodeError as exc:
            fault = exc
        except UnicodeDecodeError:
            raise TensorInvalid("the inference request is not UTF-8 text") from None
        entry = {
            "type": "json_invalid",
            "loc": ("body", fault.pos),
            "msg": "JSON decode error",
            "ctx": {"error": fault.msg},
        }
        raise TensorInvalid(describe_errors([entry], head)) from None


def parse_request(body: bytes, header_length: str | None) -> tuple[InferRequest, list[Any]]:
    """The request's JSON and each input's values (binary data where the extension put it)."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise TensorInvalid(f"{HEADER_LENGTH}: {header_length!r} is not a number") from None
        if not 0 < split <= len(body):
            raise TensorInvalid(f"{HEADER_LENGTH}: {split} is outside the body's {len(body)} bytes")
        head, rest = body[:split], body[split:]
    else:
        head, rest = body, b""
    try:
        request = InferRequest.model_validate(_json(head))
    except ValidationError as exc:
        raise TensorInvalid(f"the inference request: {describe_errors(exc.errors())}") from None
    values: list[Any] = []
    at = 0
    for tensor in request.inputs:
        size = tensor.parameters.get("binary_data_size")
        raw = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or at + size > len(rest):
                raise TensorInvalid(
                    f"input {tensor.name!r}: binary_data_size {size!r} runs past the body"
                )
            raw, at = rest[at : at + size], at + size
        values.append(tensor_values(tensor, raw))
    if at != len(rest):
        raise TensorInvalid(f"{len(rest) - at} bytes of binary data belong to no input")
    return request, values


def _rows_of(tensor: RequestInput, width: int) -> int:
    shape = tensor.shape
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == width):
        return shape[0]
    wanted = "[rows]" if width == 1 else f"[rows, {width}]"
    raise TensorInvalid(f"input {tensor.name!r}: shape {shape}, expected {wanted}")


def _check_type(tensor: RequestInput, ftype: FeatureType, feature: str) -> None:
    if tensor.datatype not in _ACCEPTS[ftype]:
        raise TensorInvalid(
            f"input {tensor.name!r}: datatype {tensor.datatype} does not fit feature "
            f"{feature!r} ({ftype}: send {' or '.join(sorted(_ACCEPTS[ftype]))})"
        )


def request_rows(
    manifest: Manifest, request: InferRequest, values: Sequence[list[Any]]
) -> list[dict[str, Any]]:
    """Rows of feature values: one tensor per feature, or one [rows, features] tensor."""
    features = manifest.features
    names = [f.name for f in features]
    inputs = request.inputs
    if len(inputs) == 1 and inputs[0].name not in names:
        tensor = inputs[0]
        if not manifest.numeric or len(tensor.shape) != 2 or tensor.shape[1] != len(names):
            raise TensorInvalid(
                f"input {tensor.name!r}: send one input per feature ({', '.join(names)})"
                + (
                    f", or one of shape [rows, {len(names)}]"
                    if manifest.numeric and len(names) > 1
                    else ""
                )
            )
        for feature in features:
            _check_type(tensor, feature.type, feature.name)
        count = tensor.shape[0]
        flat = values[0]
        table = [flat[i * len(names) : (i + 1) * len(names)] for i in range(count)]
    else:
        given = {t.name: i for i, t in enumerate(inputs)}
        if len(given) != len(inputs):
            raise TensorInvalid("an input is named twice")
        unknown = sorted(set(given) - set(names))
        missing = [n for n in names if n not in given]
        if unknown or missing:
            parts = [f"unknown inputs {unknown}"] if unknown else []
            parts += [f"missing inputs {missing}"] if missing else []
            raise TensorInvalid(f"{'; '.join(parts)}; the model takes {', '.join(names)}")
        counts = set()
        for feature in features:
            tensor = inputs[given[feature.name]]
            _check_type(tensor, feature.type, feature.name)
            counts.add(_rows_of(tensor, 1))
        if len(counts) != 1:
            raise TensorInvalid(f"inputs hold different numbers of rows: {sorted(counts)}")
        count = counts.pop()
        columns = [values[given[n]] for n in names]
        table = [[column[i] for column in columns] for i in range(count)]
    if not 1 <= count <= manifest.max_rows:
        raise TensorInvalid(f"{count} rows; a request holds 1 to {manifest.max_rows}")
    converted: list[dict[str, Any]] = []
    for row in table:
        converted.append(
            {
                f.name: float(v) if f.type == "float" else v
                for f, v in zip(features, row, strict=True)
            }
        )
    return converted


def requested_outputs(request: InferRequest, available: Iterable[str]) -> list[str] | None:
    """The outputs the request names (None: all); an unknown one is refused."""
    if not request.outputs:
        return None
    have = list(available)
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in have]
    if unknown:
        raise TensorInvalid(f"unknown outputs {unknown}; the model gives {', '.join(have)}")
    return names


def binary_outputs(request: InferRequest) -> set[str]:
    """The outputs to send as binary data: all if ``binary_data_output``, unless an output
    says otherwise with its own ``binary_data``."""
    everything = bool(request.parameters.get("binary_data_output", False))
    chosen = set(OUTPUTS) if everything else set()
    for output in request.outputs or []:
        flag = output.parameters.get("binary_data")
        if flag is True:
            chosen.add(output.name)
        elif flag is False:
            chosen.discard(output.name)
    return chosen


def _datatype(declared: str, values: list[Any]) -> str:
    if any(isinstance(v, str) for v in values):
        return "BYTES"
    if declared == "BYTES" and values:
        return "BOOL" if all(isinstance(v, bool) for v in values) else "FP64"
    return declared


def _tensor(name: str, declared: str, rows: list[Any]) -> dict[str, Any]:
    nested = bool(rows) and isinstance(rows[0], list)
    flat = [v for row in rows for v in row] if nested else list(rows)
    shape = [len(rows), len(rows[0])] if nested else [len(rows)]
    return {"name": name, "datatype": _datatype(declared, flat), "shape": shape, "data": flat}


def inference_response(
    out: PredictionOut, types: OutputTypes, options: InferenceOptions
) -> dict[str, Any]:
    """The protocol's response (JSON data) for a prediction."""
    outputs = [_tensor("predictions", types.predictions, list(out.predictions))]
    if out.probabilities is not None:
        outputs.append(_tensor("probabilities", types.probabilities or "FP64", out.probabilities))
    if options.outputs is not None:
        outputs = [o for o in outputs if o["name"] in options.outputs]
    response: dict[str, Any] = {
        "model_name": out.model,
        "model_version": out.version,
        "outputs": outputs,
        "parameters": {"batch_size": out.batch_size},
    }
    if options.id is not None:
        response["id"] = options.id
    return response


def _binary(tensor: Mapping[str, Any]) -> bytes:
    if tensor["datatype"] == "BYTES":
        parts = []
        for value in tensor["data"]:
            encoded = str(value).encode("utf-8")
            parts.append(struct.pack("<I", len(encoded)) + encoded)
        return b"".join(parts)
    return np.asarray(tensor["data"], dtype=NUMPY[tensor["datatype"]]).tobytes()


def encode_response(response: Mapping[str, Any], binary: set[str]) -> tuple[bytes, int | None]:
    """The body to send and, with binary outputs, the JSON header's length."""
    head = dict(response)
    blobs: list[bytes] = []
    outputs = []
    for tensor in response.get("outputs", []):
        if tensor["name"] in binary:
            blob = _binary(tensor)
            blobs.append(blob)
            tensor = {k: v for k, v in tensor.items() if k != "data"}
            tensor["parameters"] = {"binary_data_size": len(blob)}
        outputs.append(tensor)
    head["outputs"] = outputs
    text = orjson.dumps(head)
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)
