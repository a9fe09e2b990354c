"""Every error the API answers, rendered as ``{"type", "message"}`` (422s add ``errors``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, compile_path

from asyncml.errors import AsyncmlError, InputInvalid, describe_errors

_HTTP_TYPES = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the route this path was meant for.

    Starlette's own 405 names only the first route that matched the path: /v1/tasks/{id}
    would say POST (of /v1/tasks/{kind}) and hide GET and DELETE. Each method is tried on
    the routes' own ``matches``. When two readings of the path match, e.g.
    /v1/tasks/audio.length is the kind's POST route and also /v1/tasks/{task_id} for GET and
    DELETE (which would look for a task named audio.length), the documented route naming
    the path with the fewest parameters is the one meant, and only its methods are listed.
    """
    every = [method for method in _METHODS if _matches(request, method)]
    meant = _documented_methods(request.app, request.scope["path"])
    return [method for method in every if method in meant] or every


def _matches(request: Request, method: str) -> bool:
    scope = {**request.scope, "method": method}
    return any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes)


def _documented_methods(app: FastAPI, path: str) -> set[str]:
    """Methods of the OpenAPI path template naming ``path`` with the fewest parameters, when
    documented templates with more parameters match it too (empty otherwise: one reading)."""
    readings: dict[int, set[str]] = {}
    for template, operations in app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods = {m.upper() for m in operations if m.upper() in _METHODS}
            readings.setdefault(template.count("{"), set()).update(methods)
    return readings[min(readings)] if len(readings) > 1 else set()


async def _asyncml_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AsyncmlError)  # noqa: S101  # registered for this class only
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101  # registered for it only
    errors = exc.errors()
    body = InputInvalid(describe_errors(errors, exc.body)).to_body()
    body["errors"] = [
        {"loc": list(e.get("loc", ())), "msg": _entry_message(e, exc.body), "type": e.get("type")}
        for e in errors
    ]
    return JSONResponse(body, status_code=422)


def _entry_message(entry: Mapping[str, Any], body: Any) -> Any:
    if entry.get("type") == "json_invalid":
        return describe_errors([entry], body)
    return entry.get("msg")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101  # registered for it only
    headers = dict(exc.headers or {})
    message = str(exc.detail)
    if exc.status_code == 405:
        headers["Allow"] = allow = ", ".join(_allowed_methods(request))
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {allow}"
    return JSONResponse(
        {"type": _HTTP_TYPES.get(exc.status_code, "http_error"), "message": message},
        status_code=exc.status_code,
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AsyncmlError, _asyncml_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
