"""The sources the service fetches in the bench: results pages and files, on loopback.

The service fetches from it as it would from the Internet (ASYNCML_FETCH_ALLOW_LOOPBACK),
so the euro and audio scenarios measure the service and not someone else's server.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up early (it had the bytes it wanted) is not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SourceServer:
    """Results pages at /results/{date} and files of `files_dir` at /files/{name}, on loopback.

    Pages answer every date with the same draw: the parser checks shape, not which draw.
    Files honour a single `Range: bytes=a-b`, as any static file server or object store does;
    the same files at /files-norange/{name} ignore Range (always 200 and the whole file), as
    a server without Range support does: the service's full-download fallback.
    """

    def __init__(self, files_dir: Path | None = None) -> None:
        from euro_pages import results_page  # tests/unit, on sys.path through stack

        self.files_dir = files_dir
        self.hits = 0
        page = results_page().encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.hits += 1
                if self.path.startswith("/results/"):
                    self._send(200, page, "text/html; charset=utf-8")
                    return
                path = None
                if self.path.startswith(("/files/", "/files-norange/")) and server.files_dir:
                    path = server.files_dir / Path(self.path).name
                if path is None or not path.is_file():
                    self.send_error(404)
                    return
                # Served the way a static file server is: only the bytes asked for, read from
                # the file at their offset and sent with sendfile(2), so a 53 MB file costs
                # this process (the load generator's) next to nothing.
                total = path.stat().st_size
                first, last, status = 0, total - 1, 200
                wanted = _RANGE.match(self.headers.get("Range", ""))
                ranged = self.path.startswith("/files/")  # /files-norange/ ignores Range
                if wanted and int(wanted[1]) < total and ranged:
                    first = int(wanted[1])
                    last = min(int(wanted[2]) if wanted[2] else total - 1, total - 1)
                    status = 206
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{total}")
                if ranged:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(last - first + 1))
                self.end_headers()
                with (
                    path.open("rb") as file,
                    contextlib.suppress(BrokenPipeError, ConnectionResetError),
                ):
                    self.connection.sendfile(file, first, last - first + 1)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SourceServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
