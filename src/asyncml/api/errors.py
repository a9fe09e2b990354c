"""Every error the API answers, rendered as ``{"type", "message"}`` (422s add ``errors``)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from asyncml.errors import AsyncmlError, InputInvalid, describe_errors

_HTTP_TYPES = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path. Starlette's own 405 names only the
    first route that matched the path: /v1/tasks/{id} would say POST (of /v1/tasks/{kind})
    and hide GET and DELETE. Each method is tried on the routes' own ``matches``."""
    allowed = []
    for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _asyncml_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AsyncmlError)  # noqa: S101  # registered for this class only
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101  # registered for it only
    errors = exc.errors()
    body = InputInvalid(describe_errors(errors)).to_body()
    body["errors"] = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return JSONResponse(body, status_code=422)


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
