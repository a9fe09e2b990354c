"""Fetcher.post: one guarded POST for webhook deliveries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from asyncml.errors import FetchBlocked, FetchError
from asyncml.fetch import Fetcher


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["content-length"])))
            status = 302 if self.path == "/moved" else 204
            self.send_response(status)
            if status == 302:
                self.send_header("location", "/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", bodies
    httpd.shutdown()
    httpd.server_close()


def test_post_sends_the_body_and_returns_the_status(server: tuple[str, list[bytes]]) -> None:
    url, bodies = server
    status = Fetcher(allow_loopback=True).post(f"{url}/hook", b'{"a":1}', {"x-test": "1"})
    assert status == 204
    assert bodies == [b'{"a":1}']


def test_post_does_not_follow_redirects(server: tuple[str, list[bytes]]) -> None:
    url, bodies = server
    assert Fetcher(allow_loopback=True).post(f"{url}/moved", b"{}", {}) == 302
    assert len(bodies) == 1


def test_post_to_loopback_is_refused_by_default(server: tuple[str, list[bytes]]) -> None:
    url, bodies = server
    with pytest.raises(FetchBlocked):
        Fetcher().post(f"{url}/hook", b"{}", {})
    assert bodies == []


def test_post_refuses_other_schemes() -> None:
    with pytest.raises(FetchError, match="http"):
        Fetcher().post("ftp://example.org/x", b"{}", {})
