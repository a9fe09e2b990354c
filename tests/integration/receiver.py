"""A webhook receiver on loopback that answers from a script and records every POST."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG = -1  # scripted answer: hold the request until the test ends


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: dict[str, list[int]] = {}  # path -> statuses to answer, in order
        self._cond = threading.Condition()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver._cond:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answers = receiver.script.get(self.path, [])
                    status = answers.pop(0) if answers else 200
                    receiver._cond.notify_all()
                if status == HANG:
                    receiver._release.wait(timeout=60)
                    return
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def posts(self, path: str) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.path == f"/{path}"]

    def wait_for(self, path: str, count: int, timeout: float = 30) -> list[Received]:
        """Block until ``count`` POSTs reached ``path``; the deadline names what was awaited."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len([r for r in self.received if r.path == f"/{path}"]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{count} POST(s) to /{path} not received in {timeout} s")
                self._cond.wait(remaining)
        return self.posts(path)

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._release.set()
            self._httpd.shutdown()
            self._httpd.server_close()
