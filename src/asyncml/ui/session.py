"""Who looks at the dashboard: a signed session cookie, its CSRF token, the operator rule.

The cookie holds the API key's digest (what the store keeps), never the key, signed with
the server's secret (``ASYNCML_UI_SECRET``, else one kept in the task store so every API
process signs alike). It is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` when the
request came over HTTPS. Each session carries a random CSRF token that every
state-changing form sends back; with keys off, a session is made on the first visit just
to carry that token.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread
from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from asyncml.auth import ANONYMOUS, Caller
from asyncml.errors import ServiceUnavailable, Unauthorized
from asyncml.settings import Settings
from asyncml.store import open_store

COOKIE = "asyncml_ui"
AuthBy = Callable[[str], Awaitable[Caller]]  # Authenticator.by_digest
SESSION_S = 12 * 3600
_SECRET_CACHE_KEY = "ui:session-secret"  # noqa: S105  # a name, not a secret; in the store's cache: shared by every API process


class LoginRequired(Exception):
    """No valid dashboard session while keys are on: the login page answers."""

    status_code = 401


class OperatorOnly(Exception):
    """A page for operator keys only (every task, the workers, the dead letters)."""

    status_code = 403


class CsrfRefused(Exception):
    """A state-changing form without this session's CSRF token."""

    status_code = 403


@dataclass
class Viewer:
    """The caller behind a dashboard request, the session's CSRF token, and the cookie to
    set if this request made the session."""

    caller: Caller
    csrf: str
    new_cookie: str | None = None

    @property
    def operator(self) -> bool:
        return self.caller.operator

    def require_operator(self) -> None:
        if not self.operator:
            raise OperatorOnly("this page needs an operator key (asyncml keys create --operator)")

    def check_csrf(self, token: str | None) -> None:
        if not token or not hmac.compare_digest(token, self.csrf):
            raise CsrfRefused("the form's CSRF token is missing or stale; reload the page")


class Sessions:
    """Signs and reads session cookies with the server's secret (read once, lazily)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._signer: URLSafeTimedSerializer | None = None

    async def signer(self) -> URLSafeTimedSerializer:
        if self._signer is None:
            if self.settings.ui_secret is not None:
                secret = self.settings.ui_secret.get_secret_value()
            else:
                secret = await anyio.to_thread.run_sync(self._stored_secret)
            self._signer = URLSafeTimedSerializer(secret, salt="asyncml-ui-session")
        return self._signer

    def _stored_secret(self) -> str:
        """One secret for every API process of a store; the first process writes it (two
        starting at once may each write one: the later wins, and a session signed with
        the other asks to sign in again)."""
        store = open_store(self.settings)
        try:
            found = store.cache_get(_SECRET_CACHE_KEY)
            if found is None:
                store.cache_set(_SECRET_CACHE_KEY, secrets.token_urlsafe(32))
                found = store.cache_get(_SECRET_CACHE_KEY)
            if found is None:
                raise ServiceUnavailable("the task store did not keep the dashboard's secret")
            return found
        finally:
            store.close()

    async def read(self, request: Request) -> dict[str, str] | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = (await self.signer()).loads(raw, max_age=SESSION_S)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        return {"d": str(data.get("d", "")), "c": data["c"]}

    async def make(self, digest: str) -> tuple[str, str]:
        """A new session's cookie value and its CSRF token."""
        csrf = secrets.token_urlsafe(24)
        return (await self.signer()).dumps({"d": digest, "c": csrf}), csrf

    async def viewer(self, request: Request, authenticate: AuthBy, required: bool) -> Viewer:
        """The request's viewer; ``LoginRequired`` with keys on and no valid session."""
        data = await self.read(request)
        if required:
            if data is None or not data["d"]:
                raise LoginRequired("sign in with an API key")
            try:
                caller = await authenticate(data["d"])
            except Unauthorized as exc:
                raise LoginRequired(exc.message) from exc
            return Viewer(caller, data["c"])
        if data is None:
            cookie, csrf = await self.make("")
            return Viewer(ANONYMOUS, csrf, new_cookie=cookie)
        return Viewer(ANONYMOUS, data["c"])


def set_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_S,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
