"""create_app(settings) -> FastAPI: the services of a process and the routers, wired."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from asyncml._version import __version__
from asyncml.api import classic, events, health, v1, v2
from asyncml.api.body_limit import BodyLimit
from asyncml.api.deps import Services
from asyncml.api.docs import install_docs
from asyncml.api.errors import install_error_handlers
from asyncml.api.limits import QueueGate, RateGate
from asyncml.api.observe import RequestMetrics
from asyncml.auth import Authenticator, load_key_file
from asyncml.engine import Engine
from asyncml.registry import Registry, build_registry
from asyncml.settings import Settings, is_loopback_host
from asyncml.store import check_at_start_async, open_async_store
from asyncml.submission import Submitter

log = logging.getLogger(__name__)


def create_app(settings: Settings, registry: Registry | None = None) -> FastAPI:
    """Settings come from the caller (the edge); the registry defaults to the built-ins
    plus the models the settings point at."""
    registry = registry or build_registry(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, registry)
        store = open_async_store(settings)
        await check_at_start_async(store, settings.store_durability, log)
        file_keys = load_key_file(settings.api_keys_file) if settings.api_keys_file else []
        auth = Authenticator(store, required=settings.auth_required, file_keys=file_keys)
        if settings.auth == "off" and not is_loopback_host(settings.api_host):
            log.warning(
                "API keys are OFF (ASYNCML_AUTH=off) and the API listens on %s: "
                "anyone who can reach it can submit and read every task",
                settings.api_host,
            )
        submitter = Submitter(settings, engine, store, QueueGate(engine, settings.max_queue_depth))
        rates = RateGate(settings)
        app.state.services = Services(settings, registry, engine, store, auth, rates, submitter)
        try:
            yield
        finally:
            rates.close()
            await store.close()
            engine.close()

    app = FastAPI(
        title="async-ml-inference",
        version=__version__,
        summary="Submit a job, get an id at once, collect the result later.",
        lifespan=lifespan,
        docs_url=None,  # served from the install by install_docs: no CDN
        redoc_url=None,
    )

    install_error_handlers(app)
    # /v1 first, then /v2: a request is matched against the routes in order, and nearly
    # every request is a submit, a poll or an infer (a V2 infer matched after every other
    # route took 137 us against a /v1 submit's 65, on a loaded machine).
    app.include_router(v1.build_router(registry, settings))
    app.include_router(v2.build_router(registry))
    install_docs(app)
    app.include_router(health.router)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestMetrics)
    app.include_router(events.build_router())
    app.include_router(classic.build_router(registry))
    if settings.ui:
        from asyncml.ui import create_ui  # Jinja2 and the templates load only when served

        app.mount("/ui", create_ui(settings, registry, app))
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: each API process builds its own settings."""
    return create_app(Settings())
