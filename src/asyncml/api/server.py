"""How the API is served: uvicorn with httptools, bounded connections and timeouts.

uvicorn closes idle keep-alive connections and can cap concurrent connections, but it has
no limit on how long a client may take to send its headers, no cap per client, and its own
over-cap answer is ``text/plain`` without ``Retry-After``. ``GuardedProtocol`` adds:

- a header timeout: from a connection's first byte (or a keep-alive request's first byte)
  to the end of the headers, at most ``ASYNCML_API_HEADER_TIMEOUT_S``; then the connection
  is closed without an answer;
- a cap per client address (``ASYNCML_API_MAX_CONNECTIONS_PER_CLIENT``), below the cap of
  the process (``ASYNCML_API_MAX_CONNECTIONS``), so that one address holding slow or idle
  connections cannot take every slot;
- the service's own 503 body (``{"type", "message"}``, ``Retry-After``) past either cap.

A connection past a cap is refused in ``connection_made``: a fixed answer written at once
and the connection closed, before a byte is parsed. That is the cheapest thing a flood can
cost (an accept, a write, a close; it never holds a slot or a file descriptor), and it is
honest: the client reads why, and when to come back, as soon as it reads.

uvicorn's ``--workers`` starts processes by spawning, so the limits travel with the
protocol factory (a picklable ``functools.partial``), never re-read from the environment.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from asyncml import metrics
from asyncml.errors import ServiceUnavailable
from asyncml.settings import Settings

log = logging.getLogger(__name__)

_WARN_EVERY_S = 10.0  # a flood is one warning per interval, not one per connection


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    max_connections: int
    max_per_client: int  # 0: no cap per client

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.api_header_timeout_s,
            max_connections=settings.api_max_connections,
            max_per_client=settings.api_max_connections_per_client,
        )


def client_key(peername: Any) -> str | None:
    """Whom a connection counts against: its IPv4 address, or the /64 of an IPv6 one (one
    host usually holds a whole /64, so counting single v6 addresses would be no cap at
    all). ``None`` for a Unix socket, which has no client address to cap."""
    if not isinstance(peername, tuple) or not peername:
        return None
    host = str(peername[0])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # a dual-stack socket's IPv4 client
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _refusal(message: str) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """Status line, headers and body of the 503 every other refusal of the API sends."""
    error = ServiceUnavailable(message)
    body = json.dumps(error.to_body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error.headers().items()),
        (b"connection", b"close"),
    ]
    return b"HTTP/1.1 503 Service Unavailable", headers, body


@functools.cache
def _raw_refusals(limits: ConnectionLimits) -> dict[str, bytes]:
    """The whole answers written in ``connection_made``, built once per set of limits."""
    messages = {
        "process": f"the server holds its most connections ({limits.max_connections}); retry later",
        "client": f"too many open connections from your address (at most "
        f"{limits.max_per_client}); close some, or retry later",
    }
    answers = {}
    for reason, message in messages.items():
        status, headers, body = _refusal(message)
        lines = [status, *(name + b": " + value for name, value in headers)]
        answers[reason] = b"\r\n".join(lines) + b"\r\n\r\n" + body
    return answers


_BUSY_STATUS, _BUSY_HEADERS, _BUSY_BODY = _refusal(
    "the server is running its most requests; retry later"
)


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI answer while the process runs as many requests as it holds connections."""
    await send({"type": "http.response.start", "status": 503, "headers": _BUSY_HEADERS})
    await send({"type": "http.response.body", "body": _BUSY_BODY, "more_body": False})


@dataclass
class _Book:
    """Open connections of one server, by client; refusals not yet logged."""

    open_by_client: Counter[str]
    refused: Counter[str]
    warned_at: float = 0.0


_books: weakref.WeakKeyDictionary[ServerState, _Book] = weakref.WeakKeyDictionary()


def _book(state: ServerState) -> _Book:
    book = _books.get(state)
    if book is None:
        book = _books[state] = _Book(Counter(), Counter())
    return book


class GuardedProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        # The caps are checked here, so that their answer is the service's JSON 503.
        self.limit_concurrency = None
        self._service_app = self.app
        self._client: str | None = None
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        if self._limits.header_timeout_s > 0:
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout_s, self._headers_too_slow
            )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection that did not send its headers in time")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        book = _book(self.server_state)
        client = client_key(transport.get_extra_info("peername"))
        reason = None
        if len(self.connections) >= self._limits.max_connections:
            reason = "process"
        elif (
            client is not None
            and self._limits.max_per_client
            and book.open_by_client[client] >= self._limits.max_per_client
        ):
            reason = "client"
        if reason is not None:
            self._refuse(transport, book, reason, client)
            return
        super().connection_made(transport)
        if client is not None:
            book.open_by_client[client] += 1
            self._client = client
        self._arm()

    def _refuse(
        self, transport: asyncio.Transport, book: _Book, reason: str, client: str | None
    ) -> None:
        self.transport = transport
        self._refused = True
        transport.write(_raw_refusals(self._limits)[reason])
        transport.close()
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        book.refused[f"{reason} cap ({client})" if reason == "client" else "process cap"] += 1
        now = time.monotonic()
        if now - book.warned_at >= _WARN_EVERY_S:
            book.warned_at = now
            counts = ", ".join(f"{n} over the {what}" for what, n in book.refused.most_common(5))
            log.warning("refused connections with 503 (%s)", counts)
            book.refused.clear()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # bytes that arrived before the close took effect: not parsed
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        # uvicorn's own check, which this class turned off, with the service's answer.
        busy = len(self.tasks) >= self._limits.max_connections
        self.app = _busy if busy else self._service_app
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._client is not None:
            open_by_client = _book(self.server_state).open_by_client
            open_by_client[self._client] -= 1
            if open_by_client[self._client] <= 0:
                del open_by_client[self._client]
            self._client = None
        super().connection_lost(exc)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The server's options from the settings (host and port are the caller's).

    ``limit_concurrency`` is not given to uvicorn: ``GuardedProtocol`` applies the cap.
    """
    return {
        "http": functools.partial(GuardedProtocol, limits=ConnectionLimits.from_settings(settings)),
        "loop": "uvloop",
        "timeout_keep_alive": settings.api_keepalive_timeout_s,
        "h11_max_incomplete_event_size": 16 * 1024,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }
