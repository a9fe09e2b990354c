"""Probes and metrics: /healthz, /readyz, /metrics."""

from __future__ import annotations

import hmac

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from asyncml import metrics
from asyncml.api.deps import Services, ServicesDep
from asyncml.api.events import open_streams
from asyncml.errors import ServiceUnavailable, Unauthorized
from asyncml.store import StoreDurability, refuses_readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving; says nothing about the broker or store."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready only when both the broker and the result store answer, and (with
    ASYNCML_STORE_DURABILITY=check) the store keeps accepted tasks across a crash."""
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
    body: dict[str, object] = dict(checks)
    durability = await _store_durability(services) if ready else None
    if durability is not None and durability.durable is not True:
        body["store_durability"] = durability.model_dump()
        ready = not refuses_readiness(durability, services.settings.store_durability)
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", **body},
        status_code=200 if ready else 503,
    )


async def _store_durability(services: Services) -> StoreDurability | None:
    """Read on every probe, so a fix made live (CONFIG SET appendonly yes) is seen at once;
    None when ASYNCML_STORE_DURABILITY=off or the store does not answer."""
    if services.settings.store_durability == "off":
        return None
    try:
        return await services.store.durability()
    except ServiceUnavailable:
        return None


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(services: ServicesDep, request: Request) -> Response:
    """Prometheus text exposition; queue depths are read from the broker on scrape."""
    token = services.settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), token.get_secret_value().encode()):
            raise Unauthorized("send the metrics token: Authorization: Bearer <token>")
    depth = metrics.QueueDepth(services.engine.queue_depths)
    durability = await _store_durability(services)
    durable = metrics.StoreDurable(
        None if durability is None else durability.durable, read=durability is not None
    )
    waiters = metrics.ApiWaiters(open_streams, services.store.watchers)
    body = await anyio.to_thread.run_sync(metrics.exposition, [depth, durable, waiters])
    return Response(body, media_type=CONTENT_TYPE_LATEST)
