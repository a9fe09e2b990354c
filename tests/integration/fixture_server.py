"""A local HTTP server for test fixtures: audio files, a gated URL, a request log.

``/gate/<name>`` holds its answer until the test opens the gate, so a test can keep a
task running exactly as long as it needs, with no sleeps.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class FixtureServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        self.gate_open = threading.Event()
        self.gate_reached = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(self.path)
                name = self.path.lstrip("/")
                if name.startswith("redirect?to="):  # an open redirect, as attackers use
                    self.send_response(302)
                    self.send_header("Location", unquote(name.removeprefix("redirect?to=")))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if name.startswith("gate/"):
                    server.gate_reached.set()
                    if not server.gate_open.wait(timeout=120):
                        self.send_error(504, "gate never opened")
                        return
                    name = name.removeprefix("gate/")
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if wanted:  # as most file servers and CDNs do
                    first, last = int(wanted[1]), min(int(wanted[2]), len(data) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
                    data = data[first : last + 1]
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # A client may hang up mid-body (a killed worker, a size cap): not an error.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def hits(self, name: str) -> int:
        with self._lock:
            return sum(1 for p in self.requests if p.lstrip("/") == name)

    def reset(self) -> None:
        """Close the gate and forget earlier requests: each test starts from zero."""
        self.gate_open.clear()
        self.gate_reached.clear()
        with self._lock:
            self.requests.clear()

    @contextmanager
    def running(self) -> Iterator[FixtureServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self.gate_open.set()
            self._httpd.shutdown()
            self._httpd.server_close()
