"""The Fetcher: downloads and small requests through the guarded transport, under caps.

Redirects are followed here, one hop at a time, so every hop goes through the address policy
and the transport's connect-time check; proxy variables and ``.netrc`` are ignored (a proxy
would make the connect-time check moot). A download streams to disk with a byte cap (checked
against ``Content-Length`` up front and against the bytes actually received), per-phase
timeouts and a wall-clock cap that every socket wait is clamped to. A ``FetchBudget`` makes
that cap one deadline for every request of one task. Every failure is a ``FetchError`` whose
message names the URL without its credentials.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from asyncml.errors import FetchBlocked, FetchError, FetchTooLarge
from asyncml.fetch._deadline import FetchBudget, _Deadline
from asyncml.fetch._policy import (
    Resolver,
    _parse_url,
    _redact,
    credentials_refusal,
    resolve_host,
)
from asyncml.fetch._transport import _GuardedBackend, _GuardedTransport
from asyncml.settings import Settings


@dataclass(frozen=True)
class Downloaded:
    """A body saved to disk; ``final_url`` is the last hop, without credentials.

    ``status_code`` and ``content_range`` tell a ranged request's answer: 206 with
    ``bytes a-b/total`` for the range, or 200 when the server ignored Range and sent it all.
    """

    path: Path
    size: int
    content_type: str | None
    final_url: str
    status_code: int = 200
    content_range: str | None = None


@dataclass(frozen=True)
class Fetched:
    """A response read into memory; ``content`` is empty unless the status is 2xx.

    ``final_url`` is the last hop, without credentials.
    """

    status_code: int
    headers: httpx.Headers
    content: bytes
    final_url: str


@dataclass(frozen=True, kw_only=True)
class Fetcher:
    """Downloads one URL at a time under the configured caps; cheap to build, holds no sockets.

    Each ``download`` uses its own connection pool, so nothing (including a connection to an
    address that was allowed under other settings) outlives the call. ``total_timeout_s``
    caps each call; with a ``budget``, the task's calls together are capped by it as well.
    """

    max_bytes: int = 200_000_000
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    max_redirects: int = 5
    allow_loopback: bool = False
    allow_private: bool = False
    resolver: Resolver = resolve_host
    budget: FetchBudget | None = field(default=None, compare=False)

    def _deadline(self) -> _Deadline:
        """This call's deadline; starts the task's budget if this is its first request."""
        now = time.monotonic()
        own = _Deadline(now + self.total_timeout_s, now, self.total_timeout_s, shared=False)
        if self.budget is None:
            return own
        started = self.budget.start(now)
        shared = _Deadline(started + self.budget.total_s, started, self.budget.total_s, True)
        return shared if shared.at <= own.at else own

    def _client(
        self, deadline: _Deadline, headers: Mapping[str, str] | None = None
    ) -> httpx.Client:
        """A client whose every connection goes through the guard, under one deadline.

        Redirects are followed by the callers, hop by hop, so each hop is checked; proxies
        and .netrc from the environment are ignored.
        """
        backend = _GuardedBackend(
            resolver=self.resolver,
            allow_loopback=self.allow_loopback,
            allow_private=self.allow_private,
            deadline=deadline.at,
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

    def download(
        self, url: str, dest: Path, *, headers: Mapping[str, str] | None = None
    ) -> Downloaded:
        """Stream ``url`` into ``dest``; on failure ``dest`` is removed and a FetchError raised.

        ``headers`` go with every hop, e.g. a ``Range``: whatever the server answers (the
        range, or the whole file when it ignores Range) is saved, so one request serves both.
        """
        deadline = self._deadline()
        current = _parse_url(url)
        with self._client(deadline, headers) as client:
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
        deadline = self._deadline()
        current = _parse_url(url)
        with self._client(deadline, headers) as client:
            for _hop in range(self.max_redirects + 1):
                shown = _redact(current)
                if current.scheme not in ("http", "https"):
                    raise FetchError(f"not an http(s) URL: {shown}")
                if not current.host:
                    raise FetchError(f"URL has no host: {shown}")
                _refuse_credentials(current)
                if deadline.passed():
                    raise FetchError(deadline.message(shown)) from TimeoutError()
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
        deadline = self._deadline()
        target = _parse_url(url)
        shown = _redact(target)
        if target.scheme not in ("http", "https") or not target.host:
            raise FetchError(f"not an http(s) URL: {shown}")
        _refuse_credentials(target)
        with self._client(deadline) as client:
            request = client.build_request(
                "POST", target, content=body, headers=dict(headers),
                timeout=self._timeout(deadline, shown),
            )  # fmt: skip
            with self._mapped_errors(shown, deadline):
                response = client.send(request, stream=True)
            response.close()
            return response.status_code

    def _read_small(self, response: httpx.Response, deadline: _Deadline, shown: str) -> bytes:
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
                if deadline.passed():
                    raise FetchError(deadline.message(shown)) from TimeoutError()
        return bytes(body)

    def _one_hop(
        self, client: httpx.Client, url: httpx.URL, dest: Path, deadline: _Deadline
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
        _refuse_credentials(url)
        request = client.build_request("GET", url, timeout=self._timeout(deadline, shown))
        with self._mapped_errors(shown, deadline):
            response = client.send(request, stream=True)
        try:
            if response.has_redirect_location and response.next_request is not None:
                return response.next_request.url
            if not response.is_success:
                error = FetchError(f"HTTP {response.status_code} from {shown}")
                error.upstream_status = response.status_code
                raise error
            return self._save(response, dest, deadline, shown)
        finally:
            response.close()

    def _timeout(self, deadline: _Deadline, shown: str) -> httpx.Timeout:
        """Per-phase timeouts, none longer than the time left, so one wait cannot blow the cap."""
        left = deadline.at - time.monotonic()
        if left <= 0:
            raise FetchError(deadline.message(shown)) from TimeoutError()
        return httpx.Timeout(
            connect=min(self.connect_timeout_s, left),
            read=min(self.read_timeout_s, left),
            write=min(self.read_timeout_s, left),
            pool=min(self.connect_timeout_s, left),
        )

    def _save(
        self, response: httpx.Response, dest: Path, deadline: _Deadline, shown: str
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
                    if deadline.passed():
                        raise FetchError(deadline.message(shown)) from TimeoutError()
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return Downloaded(
            path=dest,
            size=size,
            content_type=response.headers.get("content-type"),
            final_url=shown,
            status_code=response.status_code,
            content_range=response.headers.get("content-range"),
        )

    @contextlib.contextmanager
    def _mapped_errors(self, shown: str, deadline: _Deadline) -> Iterator[None]:
        """Turn httpx transport errors into FetchError with a message a caller can act on."""
        try:
            yield
        except httpx.TimeoutException as exc:
            if deadline.passed():
                message = deadline.message(shown)
            elif isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                message = f"timed out connecting to {shown} after {self.connect_timeout_s} s"
            else:
                message = f"timed out reading from {shown}: no data for {self.read_timeout_s} s"
            raise FetchError(message) from exc
        except httpx.ConnectError as exc:
            raise FetchError(f"cannot connect to {shown}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"download from {shown} failed: {exc}") from exc


def _refuse_credentials(url: httpx.URL) -> None:
    """Refuse a hop whose URL carries userinfo: httpx would send it as Basic auth."""
    refused = credentials_refusal(url)
    if refused is not None:
        raise FetchBlocked(refused)
