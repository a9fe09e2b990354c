"""/v2: the Open Inference Protocol (KServe, Triton, Seldon MLServer) over the same queue.

Every infer is one task of ``model.<name>`` submitted through the one submission path, so
keys, limits, the queue cap, batching in the worker, metrics and the dead-letter queue
apply as on /v1. The answer waits for the task up to a bounded time (``Prefer: wait=N``
shortens or lengthens it, up to 60 s); ``Prefer: respond-async`` answers ``202`` at once
with the task's ``Location``, and the task's result then holds the protocol's response in
``result.inference``. A task not final within the wait is answered the same way.

Errors on these routes use the protocol's body, ``{"error": "..."}``, with its statuses
(400 for a tensor that does not fit, 404 for an unknown model or version, 503 when not
ready); the rest of the API keeps ``{type, message}``.

The health routes answer without a key even when keys are on: KServe and Triton probes
carry none (as /healthz); server and model metadata, readiness of a model and infer need one.
A body sent with ``Content-Encoding: gzip`` or ``deflate`` (tritonclient's
``request_compression_algorithm``) is inflated up to ``ASYNCML_API_MAX_BODY_BYTES``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from asyncml._version import __version__
from asyncml.api.deps import CallDep, ServicesDep, authenticate
from asyncml.api.health import readyz
from asyncml.api.v1 import prefer_wait
from asyncml.errors import (
    AsyncmlError,
    InputInvalid,
    UnknownKind,
    UnsupportedMediaType,
    describe_errors,
    error_class_for,
)
from asyncml.kinds import TaskKind
from asyncml.models import LiveModel, ModelVersionUnknown, ServedModel, TensorInvalid, live_models
from asyncml.models.loaders import ModelSpec, OutputTypes
from asyncml.models.oip import (
    HEADER_LENGTH,
    binary_outputs,
    encode_response,
    parse_request,
    request_rows,
    requested_outputs,
)
from asyncml.records import TaskRecord, TaskStatus
from asyncml.registry import Registry

INFER_WAIT_S = 30.0
_ASYNC = re.compile(r"(?:^|[,;\s])respond-async(?:$|[,;\s])", re.IGNORECASE)
_PLATFORMS = {"onnx": "onnxruntime_onnx", "skops": "sklearn", "pickle": "sklearn"}
_PLATFORMS["pyfunc"] = "mlflow_pyfunc"
_FEATURE_TYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}
# zlib's window bits per Content-Encoding: "deflate" is the zlib format (RFC 9110 8.4.1.2).
_INFLATE = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class V2Error(BaseModel):
    """The protocol's error body."""

    error: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": V2Error, "description": text}
    for status, text in {
        400: "A tensor or request that does not fit the model; nothing queued.",
        404: "No such model or version.",
        413: "The body (inflated, if compressed) is larger than ASYNCML_API_MAX_BODY_BYTES.",
        415: "A Content-Encoding other than gzip, deflate or identity.",
        503: "Not ready: the broker or the store is unavailable, or the queue is full.",
    }.items()
}
# What every route but the health probes adds: the key, and the key's rate.
_KEYED: dict[str, Any] = {
    "dependencies": [Depends(authenticate)],
    "responses": {
        status: {"model": V2Error, "description": text}
        for status, text in {
            401: "No valid API key (send Authorization: Bearer aml_...).",
            429: "Over the key's request rate or its cap of unfinished tasks; see Retry-After.",
        }.items()
    },
}


def _error(message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


class V2Route(APIRoute):
    """Renders every error of a /v2 route (its dependencies' too: 401, 429) as the
    protocol's ``{"error": ...}``; a 422 of ours is the protocol's 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except AsyncmlError as exc:
                status = 400 if exc.status_code == 422 else exc.status_code
                return _error(exc.message, status, exc.headers())
            except RequestValidationError as exc:
                return _error(describe_errors(exc.errors()), 400)
            except HTTPException as exc:
                return _error(str(exc.detail), exc.status_code, exc.headers)

        return route


class _Models:
    """The models of the registry, found by the name the protocol uses."""

    def __init__(self, registry: Registry) -> None:
        self.live = live_models(registry)
        self.kinds = {name: registry.get(f"model.{name}") for name in self.live}

    def find(self, name: str) -> tuple[TaskKind[Any, Any], LiveModel]:
        name = name.removeprefix("model.")
        live = self.live.get(name)
        if live is None:
            raise UnknownKind(
                f"unknown model {name!r}; served: {', '.join(sorted(self.live)) or 'none'}"
            )
        return self.kinds[name], live


def _version(live: LiveModel, served: ServedModel, version: str | None) -> ModelSpec:
    """The spec a metadata or ready request is about (the default without a version)."""
    if version is None:
        spec = served.default_spec
        if spec is None:
            raise ModelVersionUnknown(f"model {live.name} has no version that can be served")
        return spec
    return live.resolve(version)


def _metadata(served: ServedModel, spec: ModelSpec) -> dict[str, Any]:
    manifest = spec.manifest
    types = served.outputs.get(manifest.version, OutputTypes())
    classes = manifest.outputs.classes
    outputs: list[dict[str, Any]] = [
        {"name": "predictions", "datatype": types.predictions, "shape": [-1]}
    ]
    if types.probabilities is not None:
        width = len(classes) if classes else -1
        outputs.append(
            {"name": "probabilities", "datatype": types.probabilities, "shape": [-1, width]}
        )
    return {
        "name": manifest.name,
        "versions": list(served.versions),
        "platform": _PLATFORMS.get(manifest.format, manifest.format),
        "inputs": [
            {"name": f.name, "datatype": _FEATURE_TYPES[f.type], "shape": [-1]}
            for f in manifest.features
        ],
        "outputs": outputs,
        "parameters": {"version": manifest.version, "default_version": served.default},
    }


def _failed(record: TaskRecord) -> JSONResponse:
    error = record.error
    if error is None:
        return _error(f"task {record.id} ended {record.status.value}", 500)
    status = error_class_for(error.type).status_code
    if status == 422:
        status = 400
    if record.status is TaskStatus.CANCELLED or status < 400:
        status = 500
    return _error(error.message, status)


def _inflated(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as it was before the client compressed it, at most ``limit`` bytes.

    Inflated with a cap on the output, not after the fact: a few kilobytes of gzip can
    stand for gigabytes, and the body limit is meant to bound the API's memory.
    """
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = _INFLATE.get(coding)
    if wbits is None:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not accepted; send gzip, deflate or identity"
        )
    out = bytearray()
    rest = body
    while True:  # a gzip body may hold several members, one after the other
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise TensorInvalid(f"the body is not {coding} data: {exc}") from None
        if len(out) > limit:
            raise HTTPException(
                413, detail=f"request body over the limit of {limit} bytes once inflated"
            )
        if not inflater.eof:
            raise TensorInvalid(f"the {coding} body is cut short")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        if coding != "gzip":
            raise TensorInvalid(f"{len(rest)} bytes follow the end of the {coding} data")


def _pending(record: TaskRecord) -> JSONResponse:
    location = f"/v1/tasks/{record.id}"
    return JSONResponse(
        {"id": record.id, "status": record.status.value, "location": location},
        status_code=202,
        headers={"Location": location},
    )


async def _declare_version(
    version: Annotated[str, PathParam(max_length=64, description="A version of the model")],
) -> None:
    """Documents ``{version}``; the routes read it from the path (it is optional there)."""


def build_router(registry: Registry) -> APIRouter:
    models = _Models(registry)
    router = APIRouter(
        prefix="/v2",
        route_class=V2Route,
        responses=_ERRORS,
        tags=["open inference protocol"],
    )

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        """The process answers (the protocol's liveness)."""
        return {"live": True}

    @router.get("/health/ready")
    async def ready(services: ServicesDep) -> JSONResponse:
        """Ready when the broker and the task store answer (as /readyz)."""
        probe = await readyz(services)
        if probe.status_code != 200:
            return _error(f"not ready: {bytes(probe.body).decode()}", 503)
        return JSONResponse({"ready": True})

    @router.get("", **_KEYED)
    async def server_metadata() -> dict[str, Any]:
        return {
            "name": "asyncml",
            "version": __version__,
            "extensions": ["binary_tensor_data", "respond_async"],
        }

    async def metadata(name: str, request: Request) -> dict[str, Any]:
        _, model = models.find(name)
        served = model.current()
        return _metadata(served, _version(model, served, request.path_params.get("version")))

    async def model_ready(name: str, request: Request, services: ServicesDep) -> JSONResponse:
        _, model = models.find(name)
        served = model.current()
        spec = _version(model, served, request.path_params.get("version"))
        probe = await readyz(services)
        if probe.status_code != 200:
            return _error(f"model {name} not ready: the service is not ready", 503)
        return JSONResponse({"name": spec.manifest.name, "ready": True})

    async def infer(
        name: str,
        request: Request,
        call: CallDep,  # what the route's authenticate found, read back (api/deps.py)
        prefer: Annotated[str | None, Header(max_length=200)] = None,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
        content_encoding: Annotated[str | None, Header(max_length=50)] = None,
    ) -> Response:
        """One prediction task; answered with its result within the wait."""
        services = call.services
        kind, model = models.find(name)
        served = model.current()
        version: str | None = request.path_params.get("version")
        spec = _version(model, served, version)
        body = _inflated(
            await request.body(), content_encoding, services.settings.api_max_body_bytes
        )
        parsed, values = parse_request(body, request.headers.get(HEADER_LENGTH))
        types = served.outputs.get(spec.manifest.version, OutputTypes())
        available = ["predictions"] + (["probabilities"] if types.probabilities else [])
        chosen = version
        if chosen is None and idempotency_key is not None:
            chosen = served.choose(idempotency_key)  # the same key, the same version
        payload = {
            "instances": request_rows(spec.manifest, parsed, values),
            "version": chosen,
            "inference": {"id": parsed.id, "outputs": requested_outputs(parsed, available)},
        }
        try:
            inputs = kind.input_model.model_validate(payload)
        except ValidationError as exc:
            raise TensorInvalid(describe_errors(exc.errors())) from None
        submitted = await services.submitter.submit(
            kind, inputs, caller=call.caller, idempotency_key=idempotency_key
        )
        record = submitted.record
        if prefer and _ASYNC.search(prefer):
            return _pending(record)
        if not record.final:
            wait_s = prefer_wait(prefer) or INFER_WAIT_S
            record = await services.store.wait(record.id, wait_s) or record
        if not record.final:
            return _pending(record)
        if record.status is not TaskStatus.SUCCESS:
            return _failed(record)
        response = (record.result or {}).get("inference")
        if not isinstance(response, dict):
            raise InputInvalid(f"task {record.id} was not submitted through /v2")
        body, header_length = encode_response(response, binary_outputs(parsed))
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(header_length)},
        )

    for path, versioned in (("/models/{name}", False), ("/models/{name}/versions/{version}", True)):
        suffix = "_version" if versioned else ""
        declared = [*_KEYED["dependencies"], *([Depends(_declare_version)] if versioned else [])]
        keyed = {"dependencies": declared, "responses": _KEYED["responses"]}
        router.add_api_route(
            path, metadata, methods=["GET"], name=f"model_metadata{suffix}", **keyed
        )
        router.add_api_route(
            f"{path}/ready",
            model_ready,
            methods=["GET"],
            name=f"model_ready{suffix}",
            **keyed,
        )
        router.add_api_route(
            f"{path}/infer",
            infer,
            methods=["POST"],
            name=f"infer{suffix}",
            **keyed,
            openapi_extra={
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/octet-stream": {"schema": {"type": "string"}},
                    }
                }
            },
        )
    return router
