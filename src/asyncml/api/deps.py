"""Dependency wiring only: what routes depend on, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from asyncml.api.limits import RateGate
from asyncml.auth import Authenticator, Caller
from asyncml.engine import Engine
from asyncml.registry import Registry
from asyncml.settings import Settings
from asyncml.store import AsyncTaskStore
from asyncml.submission import Submitter


@dataclass
class Services:
    settings: Settings
    registry: Registry
    engine: Engine
    store: AsyncTaskStore
    auth: Authenticator
    rates: RateGate
    submitter: Submitter


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, one
    # thread hop per request for a dictionary lookup.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (aml_...), required unless the server runs without keys.",
)


async def authenticate(
    request: Request,
    response: Response,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Who calls (401 if keys are required and none valid is sent), counted against its
    rate (429 past it); the ``RateLimit-*`` headers go on the answer."""
    # Not through ServicesDep: FastAPI solves a dependency's own dependencies again on
    # every request, cached or not, and this one runs on every request.
    services: Services = request.app.state.services
    header = None if credentials is None else f"Bearer {credentials.credentials}"
    caller = await services.auth.authenticate(header)
    response.headers.update(await services.rates.check(caller))
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]


@dataclass(frozen=True)
class Call:
    """What a route of a router guarded by ``authenticate`` works with."""

    services: Services
    caller: Caller


async def current_call(request: Request) -> Call:
    """The services and the caller ``authenticate`` found for this request, read back.

    For the hot routes (submit, poll): ``ServicesDep`` + ``CallerDep`` cost two more
    dependency solves per request, and FastAPI solves ``authenticate``'s subtree again
    even when its value is cached. Only for a router whose ``dependencies`` hold
    ``Depends(authenticate)`` (they run before a route's own parameters)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:
        raise RuntimeError("CallDep on a route whose router does not run authenticate")
    services: Services = request.app.state.services
    return Call(services, caller)


CallDep = Annotated[Call, Depends(current_call)]
