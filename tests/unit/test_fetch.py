"""Fetcher: SSRF guard, caps and readable failures, against a server on 127.0.0.1 only.

Addresses other than loopback are never dialled: their tests check the policy function, or
hand the fetcher a resolver that maps a made-up name to them and assert it refuses before
any connection is attempted.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asyncml.errors import FetchBlocked, FetchError, FetchTooLarge
from asyncml.fetch import (
    FetchBudget,
    Fetcher,
    IPAddress,
    Resolver,
    address_allowed,
    literal_refusal,
    resolve_host,
)
from asyncml.settings import Settings

BODY = b"RIFF" + bytes(range(256)) * 200  # 51,204 bytes
STALL_DEADLINE_S = 30.0
DRIP_INTERVAL_S = 0.1  # the drip routes send one body byte per interval


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()  # stalled and dripping handlers stop at teardown
        self.paths: list[str] = []
        self.hosts: list[str] = []
        self.authorizations: list[str | None] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.server.hosts.append(self.headers.get("Host", ""))
        self.server.authorizations.append(self.headers.get("Authorization"))
        route = self.path.split("?")[0]
        try:
            if route == "/audio":
                self._reply(200, BODY, {"Content-Type": "audio/wav"})
            elif route == "/chunked":
                self._chunked(BODY)
            elif route == "/missing":
                self._reply(404, b"no such file")
            elif route == "/hop":
                self._redirect("/audio")
            elif route == "/loop":
                self._redirect("/loop")
            elif route == "/to-internal":
                self._redirect(f"http://internal.test:{self.server.port}/audio")
            elif route == "/to-credentials":
                self._redirect(f"http://alice:s3cret@127.0.0.1:{self.server.port}/audio")
            elif route == "/to-ftp":
                self._redirect("ftp://127.0.0.1/audio")
            elif route == "/stall":
                self.server.release.wait(STALL_DEADLINE_S)
                self._reply(200, BODY)
            elif route == "/stall-mid-body":
                self._start(200, {"Content-Length": str(len(BODY))})
                self.wfile.write(BODY[:1000])
                self.wfile.flush()
                self.server.release.wait(STALL_DEADLINE_S)
            elif route == "/drip":
                self._drip(100)  # 10 s of body: long past any cap these tests set
            elif route == "/drip-then-stall":
                self._drip(15)  # 1.5 s of bytes, then silence
                self.server.release.wait(STALL_DEADLINE_S)
            else:
                self._reply(500, b"unknown route")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the fetcher hung up first, which is what several tests want

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._start(status, {"Content-Length": str(len(body)), **(headers or {})})
        self.wfile.write(body)

    def _chunked(self, body: bytes) -> None:
        self._start(200, {"Transfer-Encoding": "chunked"})
        for at in range(0, len(body), 4096):
            piece = body[at : at + 4096]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _drip(self, count: int) -> None:
        """Send headers for a large body, then ``count`` single bytes one interval apart.

        Each byte arrives well inside any read timeout, so only a wall-clock cap stops this.
        """
        self._start(200, {"Content-Length": str(len(BODY))})
        for _ in range(count):
            if self.server.release.wait(DRIP_INTERVAL_S):
                return
            self.wfile.write(b"x")
            self.wfile.flush()

    def _redirect(self, location: str) -> None:
        self._reply(302, b"", {"Location": location})


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address a socket is opened to during the test (httpcore dials via this call)."""
    seen: list[tuple[str, int]] = []
    real = socket.create_connection

    def spy(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        seen.append((address[0], address[1]))
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", spy)
    return seen


def _resolver(names: dict[str, list[str]]) -> Resolver:
    def resolve(host: str, port: int) -> Sequence[IPAddress]:
        if host in names:
            return [ipaddress.ip_address(a) for a in names[host]]
        return resolve_host(host, port)

    return resolve


def _loopback_fetcher(**overrides: object) -> Fetcher:
    options: dict[str, object] = {"allow_loopback": True, "max_bytes": 1_000_000}
    options.update(overrides)
    return Fetcher(**options)  # type: ignore[arg-type]


# --- the address policy -----------------------------------------------------------------------

NEVER = ["0.0.0.0", "::", "0.1.2.3", "224.0.0.1", "ff02::1", "255.255.255.255", "240.0.0.1"]
LOOPBACK = ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"]
PRIVATE = [
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "feff::ffff",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_unicast_is_allowed_by_default(address: str) -> None:
    ip = ipaddress.ip_address(address)

    assert address_allowed(ip, allow_loopback=False, allow_private=False)


@pytest.mark.parametrize("address", LOOPBACK + PRIVATE + NEVER)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    ip = ipaddress.ip_address(address)

    assert not address_allowed(ip, allow_loopback=False, allow_private=False)


@pytest.mark.parametrize("address", LOOPBACK)
def test_loopback_is_allowed_only_with_allow_loopback(address: str) -> None:
    ip = ipaddress.ip_address(address)

    assert address_allowed(ip, allow_loopback=True, allow_private=False)
    assert not address_allowed(ip, allow_loopback=False, allow_private=True)


@pytest.mark.parametrize("address", PRIVATE)
def test_private_ranges_are_allowed_only_with_allow_private(address: str) -> None:
    ip = ipaddress.ip_address(address)

    assert address_allowed(ip, allow_loopback=False, allow_private=True)
    assert not address_allowed(ip, allow_loopback=True, allow_private=False)


@pytest.mark.parametrize("address", NEVER)
def test_unspecified_multicast_and_reserved_are_never_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)

    assert not address_allowed(ip, allow_loopback=True, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:s3cret@audio.example/a.wav",
        "https://alice@audio.example/a.wav",
        "http://:s3cret@8.8.8.8/a.wav",
    ],
)
def test_url_with_credentials_is_refused_before_any_lookup(url: str) -> None:
    refused = literal_refusal(url, allow_loopback=True, allow_private=True)

    assert refused is not None
    assert "credentials" in refused
    assert "s3cret" not in refused and "alice" not in refused


def test_url_without_credentials_is_not_refused_for_its_name() -> None:
    assert (
        literal_refusal("http://audio.example/a.wav", allow_loopback=False, allow_private=False)
        is None
    )


# --- downloads from the loopback server -------------------------------------------------------


def test_download_writes_the_body_to_dest(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "body.wav"

    got = _loopback_fetcher().download(f"http://127.0.0.1:{server.port}/audio", dest)

    assert dest.read_bytes() == BODY
    assert (got.path, got.size, got.content_type) == (dest, len(BODY), "audio/wav")
    assert got.final_url == f"http://127.0.0.1:{server.port}/audio"


def test_download_of_a_chunked_body_writes_every_byte(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "body.wav"

    _loopback_fetcher().download(f"http://127.0.0.1:{server.port}/chunked", dest)

    assert dest.read_bytes() == BODY


def test_loopback_is_refused_unless_allowed(server: _Server, tmp_path: Path) -> None:
    fetcher = Fetcher(allow_loopback=False)

    with pytest.raises(FetchBlocked, match=r"127\.0\.0\.1 \(loopback address.*ALLOW_LOOPBACK=true"):
        fetcher.download(f"http://127.0.0.1:{server.port}/audio", tmp_path / "body.wav")

    assert server.paths == []
    assert not (tmp_path / "body.wav").exists()


def test_body_whose_content_length_exceeds_the_cap_is_refused_up_front(
    server: _Server, tmp_path: Path
) -> None:
    dest = tmp_path / "body.wav"

    with pytest.raises(FetchTooLarge, match=f"is {len(BODY)} bytes, more than the limit of 1000"):
        _loopback_fetcher(max_bytes=1000).download(f"http://127.0.0.1:{server.port}/audio", dest)

    assert not dest.exists()


def test_chunked_body_is_cut_off_once_it_passes_the_cap(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "body.wav"

    with pytest.raises(FetchTooLarge, match="sent more than the limit of 10000 bytes"):
        _loopback_fetcher(max_bytes=10_000).download(
            f"http://127.0.0.1:{server.port}/chunked", dest
        )

    assert not dest.exists()


def test_body_exactly_at_the_cap_is_accepted(server: _Server, tmp_path: Path) -> None:
    got = _loopback_fetcher(max_bytes=len(BODY)).download(
        f"http://127.0.0.1:{server.port}/chunked", tmp_path / "body.wav"
    )

    assert got.size == len(BODY)


def test_http_404_is_a_fetch_error_naming_the_status(server: _Server, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{server.port}/missing"

    with pytest.raises(FetchError, match=re.escape(f"HTTP 404 from {url}")):
        _loopback_fetcher().download(url, tmp_path / "body.wav")


def test_redirect_is_followed_to_the_final_body(server: _Server, tmp_path: Path) -> None:
    got = _loopback_fetcher().download(f"http://127.0.0.1:{server.port}/hop", tmp_path / "body.wav")

    assert got.final_url == f"http://127.0.0.1:{server.port}/audio"
    assert server.paths == ["/hop", "/audio"]


def test_redirect_to_a_private_address_is_blocked_before_connecting(
    server: _Server, tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    fetcher = _loopback_fetcher(resolver=_resolver({"internal.test": ["10.0.0.1"]}))

    with pytest.raises(FetchBlocked, match=r"internal\.test: it resolves to a private address"):
        fetcher.download(f"http://127.0.0.1:{server.port}/to-internal", tmp_path / "body.wav")

    assert connections == [("127.0.0.1", server.port)]


def test_host_with_any_refused_address_is_blocked(
    tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    fetcher = Fetcher(resolver=_resolver({"mixed.test": ["8.8.8.8", "10.0.0.1"]}))

    with pytest.raises(FetchBlocked, match=r"mixed\.test: it resolves to a private address"):
        fetcher.download("http://mixed.test/audio", tmp_path / "body.wav")

    assert connections == []


def test_blocked_name_does_not_reveal_the_address_it_resolves_to(
    tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    # Naming the address would let a caller map internal DNS one refused fetch at a time.
    fetcher = Fetcher(resolver=_resolver({"internal.example": ["10.20.30.40"]}))

    with pytest.raises(FetchBlocked) as caught:
        fetcher.download("http://internal.example/audio", tmp_path / "body.wav")

    assert caught.value.message == (
        "refusing to fetch from internal.example: it resolves to a private address; "
        "set ASYNCML_FETCH_ALLOW_PRIVATE=true to allow"
    )
    assert connections == []


def test_blocked_ip_literal_names_the_address(tmp_path: Path) -> None:
    with pytest.raises(FetchBlocked, match=r"refusing to fetch from 10\.20\.30\.40 \(private"):
        Fetcher().download("http://10.20.30.40/audio", tmp_path / "body.wav")


def test_site_local_ipv6_is_blocked_by_default(
    tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    # Python counts the deprecated fec0::/10 as global; networks that still route it are private.
    fetcher = Fetcher(resolver=_resolver({"old-site.test": ["fec0::1"]}))

    with pytest.raises(FetchBlocked, match="site-local address; set ASYNCML_FETCH_ALLOW_PRIVATE"):
        fetcher.download("http://old-site.test/audio", tmp_path / "body.wav")

    assert connections == []


def test_blocked_private_address_says_which_setting_allows_it(tmp_path: Path) -> None:
    fetcher = Fetcher(resolver=_resolver({"meta.test": ["169.254.169.254"]}))

    with pytest.raises(FetchBlocked, match="set ASYNCML_FETCH_ALLOW_PRIVATE=true to allow"):
        fetcher.download("http://meta.test/latest/meta-data", tmp_path / "body.wav")


def test_download_connects_to_the_address_it_checked_not_a_fresh_lookup(
    server: _Server, tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    # "pinned.test" exists only in this resolver, so only the checked address can be dialled.
    fetcher = _loopback_fetcher(resolver=_resolver({"pinned.test": ["127.0.0.1"]}))

    fetcher.download(f"http://pinned.test:{server.port}/audio", tmp_path / "body.wav")

    assert connections == [("127.0.0.1", server.port)]
    assert server.hosts == [f"pinned.test:{server.port}"]


def test_url_with_credentials_is_blocked_before_connecting(
    server: _Server, tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    url = f"http://alice:s3cret@127.0.0.1:{server.port}/audio"

    with pytest.raises(FetchBlocked, match="credentials") as caught:
        _loopback_fetcher().download(url, tmp_path / "body.wav")

    assert "s3cret" not in caught.value.message
    assert connections == []


@pytest.mark.parametrize("method", ["download", "get"])
def test_redirect_to_a_url_with_credentials_is_blocked_and_sends_none(
    server: _Server, tmp_path: Path, method: str
) -> None:
    url = f"http://127.0.0.1:{server.port}/to-credentials"
    fetcher = _loopback_fetcher()

    with pytest.raises(FetchBlocked, match="credentials") as caught:
        if method == "download":
            fetcher.download(url, tmp_path / "body.wav")
        else:
            fetcher.get(url)

    assert caught.value.to_body()["type"] == "blocked_destination"
    assert "s3cret" not in caught.value.message
    assert server.paths == ["/to-credentials"]
    assert server.authorizations == [None]


def test_post_to_a_url_with_credentials_is_blocked(server: _Server) -> None:
    with pytest.raises(FetchBlocked, match="credentials"):
        _loopback_fetcher().post(f"http://alice:s3cret@127.0.0.1:{server.port}/hook", b"{}", {})

    assert server.paths == []


def test_too_many_redirects_is_a_fetch_error(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"too many redirects \(more than 3\)"):
        _loopback_fetcher(max_redirects=3).download(
            f"http://127.0.0.1:{server.port}/loop", tmp_path / "body.wav"
        )

    assert len(server.paths) == 4


def test_ftp_url_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        Fetcher().download("ftp://example.com/file.wav", tmp_path / "body.wav")


def test_redirect_to_ftp_is_a_fetch_error(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        _loopback_fetcher().download(
            f"http://127.0.0.1:{server.port}/to-ftp", tmp_path / "body.wav"
        )


def test_server_that_stalls_is_a_fetch_error_mentioning_timeout(
    server: _Server, tmp_path: Path
) -> None:
    fetcher = _loopback_fetcher(read_timeout_s=0.3)

    with pytest.raises(FetchError, match=r"timed out reading from .*/stall: no data for 0\.3 s"):
        fetcher.download(f"http://127.0.0.1:{server.port}/stall", tmp_path / "body.wav")


def test_body_that_stalls_midway_is_a_timeout_and_leaves_no_file(
    server: _Server, tmp_path: Path
) -> None:
    dest = tmp_path / "body.wav"

    with pytest.raises(FetchError, match="timed out"):
        _loopback_fetcher(read_timeout_s=0.3).download(
            f"http://127.0.0.1:{server.port}/stall-mid-body", dest
        )

    assert not dest.exists()


def test_download_is_capped_by_the_total_timeout(server: _Server, tmp_path: Path) -> None:
    fetcher = _loopback_fetcher(read_timeout_s=20.0, total_timeout_s=0.3)

    with pytest.raises(FetchError, match=r"timed out after \d+\.\d s \(the limit is 0\.3 s\)"):
        fetcher.download(f"http://127.0.0.1:{server.port}/stall", tmp_path / "body.wav")


def test_server_that_drips_bytes_is_cut_off_at_the_total_timeout(
    server: _Server, tmp_path: Path
) -> None:
    # Each byte resets the read timeout, so only the wall-clock cap can end this download.
    fetcher = _loopback_fetcher(read_timeout_s=20.0, total_timeout_s=1.0)
    dest = tmp_path / "body.wav"
    started = time.monotonic()

    with pytest.raises(FetchError, match=r"timed out after \d+\.\d s \(the limit is 1 s\)"):
        fetcher.download(f"http://127.0.0.1:{server.port}/drip", dest)

    assert time.monotonic() - started < 3.0
    assert not dest.exists()


def test_read_that_stalls_near_the_deadline_ends_at_the_deadline(
    server: _Server, tmp_path: Path
) -> None:
    # The stall starts 1.5 s in; a read allowed the full read timeout would wait until ~3.5 s.
    fetcher = _loopback_fetcher(read_timeout_s=20.0, total_timeout_s=2.0)
    started = time.monotonic()

    with pytest.raises(FetchError, match=r"timed out after \d+\.\d s \(the limit is 2 s\)"):
        fetcher.download(f"http://127.0.0.1:{server.port}/drip-then-stall", tmp_path / "body.wav")

    assert time.monotonic() - started < 3.0


def test_requests_sharing_a_budget_end_at_one_deadline(server: _Server, tmp_path: Path) -> None:
    budget = FetchBudget(total_s=1.0)
    fetcher = _loopback_fetcher(read_timeout_s=20.0, total_timeout_s=5.0, budget=budget)
    with pytest.raises(FetchError, match="timed out"):
        fetcher.download(f"http://127.0.0.1:{server.port}/drip", tmp_path / "body.wav")

    with pytest.raises(FetchError, match=r"after 1\.\d s: all of a task's downloads") as caught:
        fetcher.get(f"http://127.0.0.1:{server.port}/audio")

    assert isinstance(caught.value.__cause__, TimeoutError)  # retryable, like any timeout
    assert server.paths == ["/drip"]  # the second request was never sent


def test_refused_connection_is_a_fetch_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(FetchError, match="cannot connect to"):
        _loopback_fetcher().download(f"http://127.0.0.1:{closed_port}/", tmp_path / "body.wav")


def test_error_messages_do_not_reveal_url_credentials(server: _Server, tmp_path: Path) -> None:
    url = f"http://alice:s3cret@127.0.0.1:{server.port}/missing"

    with pytest.raises(FetchError) as caught:
        _loopback_fetcher().download(url, tmp_path / "body.wav")

    assert "s3cret" not in caught.value.message
    assert "alice" not in caught.value.message
    assert f"127.0.0.1:{server.port}/missing" in caught.value.message


def test_blocked_message_does_not_reveal_url_credentials(tmp_path: Path) -> None:
    with pytest.raises(FetchBlocked) as caught:
        Fetcher().download("http://bob:hunter2@127.0.0.1:9/x", tmp_path / "body.wav")

    assert "hunter2" not in caught.value.message


def test_from_settings_copies_every_fetch_setting() -> None:
    settings = Settings(
        fetch_max_bytes=123,
        fetch_connect_timeout_s=1.5,
        fetch_read_timeout_s=2.5,
        fetch_total_timeout_s=9.0,
        fetch_max_redirects=1,
        fetch_allow_loopback=True,
        fetch_allow_private=True,
    )

    fetcher = Fetcher.from_settings(settings)

    assert (fetcher.max_bytes, fetcher.connect_timeout_s, fetcher.read_timeout_s) == (123, 1.5, 2.5)
    assert (fetcher.total_timeout_s, fetcher.max_redirects) == (9.0, 1)
    assert fetcher.allow_loopback and fetcher.allow_private
