"""SSRF-guarded streaming download of a user-supplied URL.

A task's input URL is chosen by whoever calls the API, so the worker must not become a way
to reach the metadata service, the broker or anything else on the private network. The guard:

* resolves the hostname itself and refuses if *any* address is not allowed (a name with one
  public and one private address could otherwise be steered to the private one);
* connects to the address it checked, never re-resolving (DNS rebinding cannot swap in
  127.0.0.1 between check and connect); TLS SNI and the Host header still use the hostname;
* follows redirects itself, one hop at a time, so every hop goes through the same check;
* ignores proxy variables and ``.netrc``: a proxy would make the connect-time check moot;
* names a refused address only when the URL spelled it: for a hostname it names the category
  alone, or refused fetches would map the internal DNS for whoever calls the API.

The download streams to disk with a byte cap (checked against ``Content-Length`` up front and
against the bytes actually received), per-phase timeouts and a wall-clock cap that every socket
wait is clamped to (a server trickling bytes would otherwise reset the read timeout forever).
Every failure is a ``FetchError`` whose message names the URL without its credentials.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx

from asyncml.errors import FetchBlocked, FetchError, FetchTooLarge
from asyncml.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[IPAddress]]

_LOOPBACK_HINT = "set ASYNCML_FETCH_ALLOW_LOOPBACK=true to allow"
_PRIVATE_HINT = "set ASYNCML_FETCH_ALLOW_PRIVATE=true to allow"
# "This network": Linux routes 0.0.0.0 to the local host, and nothing else in 0/8 is reachable.
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")


@dataclass(frozen=True)
class Downloaded:
    """A body saved to disk; ``final_url`` is the last hop, without credentials."""

    path: Path
    size: int
    content_type: str | None
    final_url: str


@dataclass(frozen=True)
class Fetched:
    """A response read into memory; ``content`` is empty unless the status is 2xx.

    ``final_url`` is the last hop, without credentials.
    """

    status_code: int
    headers: httpx.Headers
    content: bytes
    final_url: str


def _refusal(ip: IPAddress, *, allow_loopback: bool, allow_private: bool) -> str | None:
    """Why ``ip`` is refused (with the setting that would allow it), or None if allowed.

    The order matters: Python counts ``::1`` as reserved and ``127.0.0.1`` as private, so
    loopback is decided before either.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:10.0.0.1 reaches 10.0.0.1 on a dual-stack socket: judge the IPv4 inside.
        if ip.ipv4_mapped is not None:
            return _refusal(
                ip.ipv4_mapped, allow_loopback=allow_loopback, allow_private=allow_private
            )
        if ip.sixtofour is not None:
            inner = _refusal(
                ip.sixtofour, allow_loopback=allow_loopback, allow_private=allow_private
            )
            if inner is not None:
                return f"6to4 address embedding a {inner}"
    if ip.is_unspecified:
        return "unspecified address; never allowed"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK:
        return "'this network' address (0.0.0.0/8); never allowed"
    if ip.is_multicast:
        return "multicast address; never allowed"
    if ip.is_loopback:
        return None if allow_loopback else f"loopback address; {_LOOPBACK_HINT}"
    if ip.is_reserved:
        return "reserved address; never allowed"
    # fec0::/10 was deprecated (RFC 3879) without being reassigned, so Python calls it global;
    # networks that still route it use it as private space.
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    if ip.is_global and not site_local:
        return None
    if allow_private:
        return None
    if ip.is_link_local:
        kind = "link-local address"
    elif site_local:
        kind = "site-local address"
    elif isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        kind = "shared (CGNAT) address"
    elif isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL:
        kind = "unique local address"
    else:
        kind = "private address"
    return f"{kind}; {_PRIVATE_HINT}"


def address_allowed(ip: IPAddress, *, allow_loopback: bool, allow_private: bool) -> bool:
    """Whether the guard lets a fetch connect to ``ip``; pure, so the policy is testable offline.

    Public global unicast is allowed; loopback only with ``allow_loopback``; private,
    link-local, unique-local, site-local (fec0::/10), CGNAT and other non-global unicast only
    with ``allow_private``;
    unspecified, multicast and reserved never. IPv4-mapped IPv6 is judged as its IPv4.
    """
    return _refusal(ip, allow_loopback=allow_loopback, allow_private=allow_private) is None


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in resolver order, without duplicates.

    ``getaddrinfo`` takes no timeout, so ``total_timeout_s`` cannot cut a slow lookup short (it
    only refuses to start the connection afterwards). The system resolver's own timeout and
    retries (``resolv.conf``) end the lookup, and the task's time limit bounds the task: the
    soft limit's exception is raised once ``getaddrinfo`` returns, the hard limit kills the
    worker process regardless.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host}: {exc}") from exc
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]))
        if ip not in found:
            found.append(ip)
    return found


def _is_literal(host: str, ip: IPAddress) -> bool:
    """Whether the URL named ``ip`` itself rather than a hostname (for a clearer message)."""
    try:
        return ipaddress.ip_address(host.strip("[]")) == ip
    except ValueError:
        return False


def _with_article(reason: str) -> str:
    """``reason`` read as "a private address" / "an unspecified address"."""
    return f"an {reason}" if reason.startswith("unspecified") else f"a {reason}"


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


def literal_refusal(url: str, *, allow_loopback: bool, allow_private: bool) -> str | None:
    """Why a URL is refused when its host is an IP literal (decidable before any lookup),
    else None. Names are judged at connect time, after resolution."""
    try:
        host = httpx.URL(url).host
        ip = ipaddress.ip_address(host)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    reason = _refusal(ip, allow_loopback=allow_loopback, allow_private=allow_private)
    return None if reason is None else f"refusing {ip}: {_with_article(reason)}"


def origin(url: str) -> str:
    """scheme://host:port only: a webhook URL's path or query may hold its token."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def _parse_url(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError(f"invalid URL {_redact(url)}: {exc}") from exc


def _redact(url: httpx.URL | str) -> str:
    """The URL without userinfo: error bodies and logs must not carry credentials."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        return str(parsed.copy_with(userinfo=b""))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"


@dataclass(frozen=True, kw_only=True)
class Fetcher:
    """Downloads one URL at a time under the configured caps; cheap to build, holds no sockets.

    Each ``download`` uses its own connection pool, so nothing (including a connection to an
    address that was allowed under other settings) outlives the call.
    """

    max_bytes: int = 200_000_000
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    max_redirects: int = 5
    allow_loopback: bool = False
    allow_private: bool = False
    resolver: Resolver = resolve_host

    def _client(self, deadline: float, headers: Mapping[str, str] | None = None) -> httpx.Client:
        """A client whose every connection goes through the guard, under one deadline.

        Redirects are followed by the callers, hop by hop, so each hop is checked; proxies
        and .netrc from the environment are ignored.
        """
        backend = _GuardedBackend(
            resolver=self.resolver,
            allow_loopback=self.allow_loopback,
            allow_private=self.allow_private,
            deadline=deadline,
        )
        return httpx.Client(
            transport=_GuardedTransport(backend),
            follow_redirects=False,
            trust_env=False,
            headers={"Accept-Encoding": "identity", **(headers or {})},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Fetcher:
        return cls(
            max_bytes=settings.fetch_max_bytes,
            connect_timeout_s=settings.fetch_connect_timeout_s,
            read_timeout_s=settings.fetch_read_timeout_s,
            total_timeout_s=settings.fetch_total_timeout_s,
            max_redirects=settings.fetch_max_redirects,
            allow_loopback=settings.fetch_allow_loopback,
            allow_private=settings.fetch_allow_private,
        )

    def download(self, url: str, dest: Path) -> Downloaded:
        """Stream ``url`` into ``dest``; on failure ``dest`` is removed and a FetchError raised."""
        deadline = time.monotonic() + self.total_timeout_s
        current = _parse_url(url)
        with self._client(deadline) as client:
            for _hop in range(self.max_redirects + 1):
                next_url = self._one_hop(client, current, dest, deadline)
                if isinstance(next_url, Downloaded):
                    return next_url
                current = next_url
        raise FetchError(
            f"too many redirects (more than {self.max_redirects}) starting at {_redact(url)}"
        )

    def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Fetched:
        """GET a small body into memory and return any final status; the caller decides on it.

        For callers that must tell a 404 from a 429 or a 503 (and read ``Retry-After``):
        ``download`` turns every non-2xx status into a FetchError. Same guard, redirects,
        timeouts and size cap as ``download``; only a 2xx body is read, under ``max_bytes``,
        so keep that cap small. A timeout's FetchError has a timeout as its ``__cause__``
        (an ``httpx.TimeoutException`` or a ``TimeoutError``), so callers can retry it.
        """
        deadline = time.monotonic() + self.total_timeout_s
        current = _parse_url(url)
        with self._client(deadline, headers) as client:
            for _hop in range(self.max_redirects + 1):
                shown = _redact(current)
                if current.scheme not in ("http", "https"):
                    raise FetchError(f"not an http(s) URL: {shown}")
                if not current.host:
                    raise FetchError(f"URL has no host: {shown}")
                if time.monotonic() >= deadline:
                    raise FetchError(self._total_timeout_message(shown)) from TimeoutError()
                request = client.build_request(
                    "GET", current, timeout=self._timeout(deadline, shown)
                )
                with self._mapped_errors(shown, deadline):
                    response = client.send(request, stream=True)
                try:
                    if response.has_redirect_location and response.next_request is not None:
                        current = response.next_request.url
                        continue
                    content = b""
                    if response.is_success:
                        content = self._read_small(response, deadline, shown)
                    return Fetched(
                        status_code=response.status_code,
                        headers=response.headers,
                        content=content,
                        final_url=shown,
                    )
                finally:
                    response.close()
        raise FetchError(
            f"too many redirects (more than {self.max_redirects}) starting at {_redact(url)}"
        )

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body`` once and return the status; no redirect is followed (a 3xx is the
        receiver's answer, not a place to resend a signed notice). Same guard and time
        limits as ``get``; the response body is not read."""
        deadline = time.monotonic() + self.total_timeout_s
        target = _parse_url(url)
        shown = _redact(target)
        if target.scheme not in ("http", "https") or not target.host:
            raise FetchError(f"not an http(s) URL: {shown}")
        with self._client(deadline) as client:
            request = client.build_request(
                "POST", target, content=body, headers=dict(headers),
                timeout=self._timeout(deadline, shown),
            )  # fmt: skip
            with self._mapped_errors(shown, deadline):
                response = client.send(request, stream=True)
            response.close()
            return response.status_code

    def _read_small(self, response: httpx.Response, deadline: float, shown: str) -> bytes:
        """The body in memory, under the byte cap and the wall-clock cap of ``get``."""
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchTooLarge(
                f"{shown} is {int(declared)} bytes, more than the limit of {self.max_bytes} bytes"
            )
        body = bytearray()
        with self._mapped_errors(shown, deadline):
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise FetchTooLarge(
                        f"{shown} sent more than the limit of {self.max_bytes} bytes"
                    )
                if time.monotonic() > deadline:
                    raise FetchError(self._total_timeout_message(shown)) from TimeoutError()
        return bytes(body)

    def _one_hop(
        self, client: httpx.Client, url: httpx.URL, dest: Path, deadline: float
    ) -> Downloaded | httpx.URL:
        """Fetch one hop: the saved body, or the URL the server redirects to."""
        shown = _redact(url)
        if not url.scheme:
            raise FetchError(f"not an absolute http(s) URL: {shown}")
        if url.scheme not in ("http", "https"):
            raise FetchError(
                f"unsupported URL scheme {url.scheme!r} in {shown}: only http and https are fetched"
            )
        if not url.host:
            raise FetchError(f"URL has no host: {shown}")
        request = client.build_request("GET", url, timeout=self._timeout(deadline, shown))
        with self._mapped_errors(shown, deadline):
            response = client.send(request, stream=True)
        try:
            if response.has_redirect_location and response.next_request is not None:
                return response.next_request.url
            if not response.is_success:
                raise FetchError(f"HTTP {response.status_code} from {shown}")
            return self._save(response, dest, deadline, shown)
        finally:
            response.close()

    def _timeout(self, deadline: float, shown: str) -> httpx.Timeout:
        """Per-phase timeouts, none longer than the time left, so one wait cannot blow the cap."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(self._total_timeout_message(shown))
        return httpx.Timeout(
            connect=min(self.connect_timeout_s, left),
            read=min(self.read_timeout_s, left),
            write=min(self.read_timeout_s, left),
            pool=min(self.connect_timeout_s, left),
        )

    def _save(
        self, response: httpx.Response, dest: Path, deadline: float, shown: str
    ) -> Downloaded:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchTooLarge(
                f"{shown} is {int(declared)} bytes, more than the limit of {self.max_bytes} bytes"
            )
        size = 0
        try:
            with dest.open("wb") as out, self._mapped_errors(shown, deadline):
                # No chunk size: a sized iterator buffers until that many bytes arrive, which
                # kept a trickling server away from the deadline check below.
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchTooLarge(
                            f"{shown} sent more than the limit of {self.max_bytes} bytes"
                        )
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise FetchError(self._total_timeout_message(shown))
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return Downloaded(
            path=dest,
            size=size,
            content_type=response.headers.get("content-type"),
            final_url=shown,
        )

    def _total_timeout_message(self, shown: str) -> str:
        return f"download of {shown} timed out: it took longer than {self.total_timeout_s} s"

    @contextlib.contextmanager
    def _mapped_errors(self, shown: str, deadline: float) -> Iterator[None]:
        """Turn httpx transport errors into FetchError with a message a caller can act on."""
        try:
            yield
        except httpx.TimeoutException as exc:
            if time.monotonic() >= deadline:
                message = self._total_timeout_message(shown)
            elif isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                message = f"timed out connecting to {shown} after {self.connect_timeout_s} s"
            else:
                message = f"timed out reading from {shown}: no data for {self.read_timeout_s} s"
            raise FetchError(message) from exc
        except httpx.ConnectError as exc:
            raise FetchError(f"cannot connect to {shown}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"download from {shown} failed: {exc}") from exc
