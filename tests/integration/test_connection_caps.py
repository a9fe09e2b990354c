"""One client address cannot lock the others out of the API (issue 18, defect 4).

A real `asyncml api` (uvicorn, httptools, the embedded engine) with its default caps: 1,000
connections per process, 100 per client address, 10 s to send the headers. The flood comes
from 127.0.0.1 and the other client from 127.0.0.2 (both loopback: Linux routes all of
127.0.0.0/8 to lo, and the server sees each as a different address).
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .processes import Launcher, service_env, wait_until_ready
from .services import free_ports

FLOOD = 1000
PER_CLIENT = 100  # ASYNCML_API_MAX_CONNECTIONS_PER_CLIENT's default
SLOW_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: flood\r\n"  # one header line, never the end


def _enough_file_descriptors(n: int) -> None:
    """The flood holds ``n`` sockets in this process (and, on a server without a per-client
    cap, as many in the API, which inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Launcher]:
    _enough_file_descriptors(FLOOD + 500)
    launch = Launcher({}, tmp_path)
    try:
        yield launch
    finally:
        launch.stop_all()


def _api(launch: Launcher, tmp_path: Path, **extra: str) -> str:
    (port,) = free_ports(1)
    launch.env = service_env(data_dir=tmp_path / "data", api_port=port, extra=extra)
    base_url = f"http://127.0.0.1:{port}"
    wait_until_ready(base_url, launch("api", ["api"]))
    return base_url


def _client_from(address: str) -> httpx.Client:
    """A client whose connections leave from ``address``, one fresh connection a request."""
    return httpx.Client(
        transport=httpx.HTTPTransport(local_address=address),
        headers={"Connection": "close"},
        timeout=15,
    )


def _timed_gets(client: httpx.Client, url: str, n: int) -> list[tuple[int, float]]:
    answers = []
    for _ in range(n):
        began = time.monotonic()
        status = client.get(url).status_code
        answers.append((status, time.monotonic() - began))
    return answers


@contextlib.contextmanager
def _slow_connections(base_url: str, source: str, n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections from ``source``, each having sent one header line and no more.
    A connection the server has already closed is kept too (its answer is read later)."""
    port = int(base_url.rsplit(":", 1)[1])
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(n):
            sock = stack.enter_context(
                socket.create_connection(
                    ("127.0.0.1", port), timeout=10, source_address=(source, 0)
                )
            )
            with contextlib.suppress(OSError):  # refused: the server closed it at once
                sock.sendall(SLOW_REQUEST)
            socks.append(sock)
        yield socks


def _read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(5)  # the answer of a refused connection comes at once, not at 10 s
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(": ")
    return name, value


def _assert_json_503(status: int, headers: httpx.Headers, body: bytes, about: str) -> None:
    assert status == 503, body
    assert headers["content-type"] == "application/json", body
    assert int(headers["retry-after"]) >= 1
    error = json.loads(body)
    assert error["type"] == "service_unavailable"
    assert about in error["message"], error


@pytest.mark.timeout(120)
def test_a_flood_of_slow_connections_from_one_address_does_not_lock_out_another(
    start_api: Launcher, tmp_path: Path
) -> None:
    base_url = _api(start_api, tmp_path)
    with _client_from("127.0.0.2") as other:
        before = _timed_gets(other, f"{base_url}/healthz", 10)
        assert {status for status, _ in before} == {200}

        with _slow_connections(base_url, "127.0.0.1", FLOOD) as flood:
            during = _timed_gets(other, f"{base_url}/healthz", 20)
            assert [status for status, _ in during] == [200] * 20, during

            # The flooding address itself is told why, and when to come back.
            with _client_from("127.0.0.1") as flooder:
                refused = flooder.get(f"{base_url}/healthz")
            _assert_json_503(
                refused.status_code, refused.headers, refused.content, "from your address"
            )
            # So is each of its connections past the cap, without waiting for its headers.
            raw = _read_until_closed(flood[-1])
            head, _, body = raw.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode().split("\r\n")
            headers = httpx.Headers([_header(line) for line in header_lines])
            _assert_json_503(int(status_line.split()[1]), headers, body, "from your address")

    normal = statistics.median(t for _, t in before)
    assert statistics.median(t for _, t in during) < normal + 0.25, (before, during)
    assert max(t for _, t in during) < 1.0, during  # not the 10 s header timeout


@pytest.mark.timeout(120)
def test_over_the_process_cap_the_answer_is_a_json_503_with_retry_after(
    start_api: Launcher, tmp_path: Path
) -> None:
    base_url = _api(start_api, tmp_path, ASYNCML_API_MAX_CONNECTIONS="20")
    with _slow_connections(base_url, "127.0.0.3", 20), _client_from("127.0.0.2") as other:
        refused = other.get(f"{base_url}/healthz")
    _assert_json_503(refused.status_code, refused.headers, refused.content, "most connections")
