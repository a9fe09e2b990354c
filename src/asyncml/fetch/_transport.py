"""The guarded transport: an httpx transport whose every connection passes the address policy.

* resolves the hostname itself and refuses if *any* address is not allowed (a name with one
  public and one private address could otherwise be steered to the private one);
* connects to the address it checked, never re-resolving (DNS rebinding cannot swap in
  127.0.0.1 between check and connect); TLS SNI and the Host header still use the hostname;
* clamps every socket wait (connect, TLS handshake, read, write) to the download's deadline: a
  server trickling bytes would otherwise reset the read timeout forever;
* names a refused address only when the URL spelled it: for a hostname it names the category
  alone, or refused fetches would map the internal DNS for whoever calls the API.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from asyncml.errors import FetchBlocked, FetchError
from asyncml.fetch._policy import IPAddress, Resolver, _is_literal, _refusal, _with_article


def _time_left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    """``timeout`` clamped to the time before ``deadline``; raises ``error`` once it is past.

    httpcore fixes the read timeout when the body starts and applies it to each socket read, so
    without the clamp the last read could start just before the deadline and wait a full read
    timeout past it.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the download's total time limit has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every wait (read, write, TLS handshake) ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        timeout = _time_left(self._deadline, timeout, httpcore.ReadTimeout)
        return self._stream.read(max_bytes, timeout=timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        timeout = _time_left(self._deadline, timeout, httpcore.WriteTimeout)
        self._stream.write(buffer, timeout=timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _time_left(self._deadline, timeout, httpcore.ConnectTimeout)
        tls = self._stream.start_tls(ssl_context, server_hostname, timeout=timeout)
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:  # Any: httpcore's own signature
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    """Dial only addresses the policy allows, and exactly the ones that were checked."""

    def __init__(
        self, *, resolver: Resolver, allow_loopback: bool, allow_private: bool, deadline: float
    ) -> None:
        super().__init__()
        self._resolver = resolver
        self._allow_loopback = allow_loopback
        self._allow_private = allow_private
        self._deadline = deadline

    def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and return its addresses, or raise if any of them is refused."""
        addresses = list(self._resolver(host, port))
        if not addresses:
            raise FetchError(f"cannot resolve host {host}: no addresses")
        for ip in addresses:
            reason = _refusal(
                ip, allow_loopback=self._allow_loopback, allow_private=self._allow_private
            )
            if reason is None:
                continue
            if _is_literal(host, ip):
                raise FetchBlocked(f"refusing to fetch from {ip} ({reason})")
            # The caller typed the name, not the address: naming it would answer DNS queries.
            raise FetchBlocked(
                f"refusing to fetch from {host}: it resolves to {_with_article(reason)}"
            )
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        last_error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in self.checked_addresses(host, port):
            try:
                stream = super().connect_tcp(
                    str(ip),
                    port,
                    timeout=_time_left(self._deadline, timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return _DeadlineStream(stream, self._deadline)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        if last_error is None:  # unreachable: checked_addresses never returns an empty list
            raise FetchError(f"cannot resolve host {host}: no addresses")
        raise last_error


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Build the CA bundle once per process: loading it costs more than a small download."""
    return httpx.create_ssl_context(trust_env=False)


class _GuardedTransport(httpx.HTTPTransport):
    """Stock httpx transport (TLS, HTTP/1.1, error mapping) whose pool dials via the guard."""

    def __init__(self, backend: _GuardedBackend) -> None:
        context = _ssl_context()
        super().__init__(verify=context, trust_env=False, retries=0)
        # httpx has no argument for the network backend; httpcore's pool does, so build it here.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=4,
            max_keepalive_connections=2,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )
