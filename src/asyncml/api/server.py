"""How the API is served: uvicorn with httptools, bounded connections and timeouts.

uvicorn closes idle keep-alive connections and can cap concurrent connections, but has no
limit on how long a client may take to send its headers: a client that drips one byte a
second would hold its connection (and a slot of the cap) for ever. ``HeaderTimeoutProtocol``
adds that limit: from a connection's first byte (or a keep-alive request's first byte) to
the end of the headers, at most ``ASYNCML_API_HEADER_TIMEOUT_S``; then the connection is
closed without an answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from asyncml.settings import Settings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    # Set by serve() in this process; a process spawned by ``--workers`` reads its settings.
    header_timeout_s: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        if type(self).header_timeout_s is None:
            type(self).header_timeout_s = Settings().api_header_timeout_s

    def _arm(self) -> None:
        self._disarm()
        timeout = type(self).header_timeout_s or 0
        if timeout > 0:
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

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
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The server's options from the settings (host and port are the caller's)."""
    HeaderTimeoutProtocol.header_timeout_s = settings.api_header_timeout_s
    return {
        "http": HeaderTimeoutProtocol,
        "loop": "uvloop",
        "timeout_keep_alive": settings.api_keepalive_timeout_s,
        "limit_concurrency": settings.api_max_connections,
        "h11_max_incomplete_event_size": 16 * 1024,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }
