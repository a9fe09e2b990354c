"""create_app(settings) -> FastAPI: wiring, error rendering, health probes."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from asyncml import metrics
from asyncml.api import classic, v1
from asyncml.api.body_limit import BodyLimit
from asyncml.api.deps import Services, ServicesDep
from asyncml.api.limits import QueueGate, RateGate
from asyncml.api.observe import RequestMetrics
from asyncml.auth import Authenticator, load_key_file
from asyncml.engine import Engine
from asyncml.errors import (
    AsyncmlError,
    InputInvalid,
    ServiceUnavailable,
    Unauthorized,
    describe_errors,
)
from asyncml.registry import Registry, build_registry
from asyncml.settings import Settings, is_loopback_host
from asyncml.store import open_async_store

log = logging.getLogger(__name__)


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


def create_app(settings: Settings, registry: Registry | None = None) -> FastAPI:
    """Settings come from the caller (the edge); the registry defaults to the built-ins
    plus the models the settings point at."""
    registry = registry or build_registry(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, registry)
        store = open_async_store(settings)
        file_keys = load_key_file(settings.api_keys_file) if settings.api_keys_file else []
        auth = Authenticator(store, required=settings.auth_required, file_keys=file_keys)
        if settings.auth == "off" and not is_loopback_host(settings.api_host):
            log.warning(
                "API keys are OFF (ASYNCML_AUTH=off) and the API listens on %s: "
                "anyone who can reach it can submit and read every task",
                settings.api_host,
            )
        app.state.services = Services(
            settings,
            registry,
            engine,
            store,
            auth,
            RateGate(settings),
            QueueGate(engine, settings.max_queue_depth),
        )
        try:
            yield
        finally:
            await store.close()
            engine.close()

    app = FastAPI(
        title="async-ml-inference",
        version="0.1.0",
        summary="Submit a job, get an id at once, collect the result later.",
        lifespan=lifespan,
    )

    @app.exception_handler(AsyncmlError)
    async def _asyncml_error(request: Request, exc: AsyncmlError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        body = InputInvalid(describe_errors(errors)).to_body()
        body["errors"] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {
            400: "malformed_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        if exc.status_code == 405:
            headers["Allow"] = allow = ", ".join(_allowed_methods(request))
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {allow}"
        return JSONResponse(
            {"type": kind, "message": message}, status_code=exc.status_code, headers=headers
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up and serving; says nothing about the broker or store."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(services: ServicesDep) -> JSONResponse:
        """Ready only when both the broker and the result store answer."""
        checks: dict[str, str] = {}
        try:
            await anyio.to_thread.run_sync(services.engine.ping_broker)
            checks["broker"] = "ok"
        except ServiceUnavailable as exc:
            checks["broker"] = exc.message
        try:
            await services.store.ping()
            checks["result_store"] = "ok"
        except ServiceUnavailable as exc:
            checks["result_store"] = exc.message
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", **checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def prometheus_metrics(services: ServicesDep, request: Request) -> Response:
        """Prometheus text exposition; queue depths are read from the broker on scrape."""
        token = settings.metrics_token
        if token is not None:
            sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(sent.encode(), token.get_secret_value().encode()):
                raise Unauthorized("send the metrics token: Authorization: Bearer <token>")
        depth = metrics.QueueDepth(services.engine.queue_depths)
        body = await anyio.to_thread.run_sync(metrics.exposition, [depth])
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestMetrics)
    app.include_router(v1.build_router(registry, settings))
    app.include_router(classic.build_router(registry))
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: each API process builds its own settings."""
    return create_app(Settings())
