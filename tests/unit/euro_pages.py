"""Results pages and a scripted loopback server for the euro.results tests.

Pages follow the markup the parser documents, wrapped in the noise a real page carries
(navigation, an ascending-order block, scripts), with classes in varying order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_DEADLINE_S = 30.0


def results_page(
    numbers: Sequence[int | str] = (12, 3, 44, 27, 9),
    stars: Sequence[int | str] = (11, 2),
    *,
    jackpot: str | None = "€17,000,000",
    draw_number: str | None = "Draw No. 1,734",
    balls_drawn: bool = True,
) -> str:
    """A page whose ``#ballsDrawn`` lists ``numbers`` then ``stars`` in that order."""
    classes = ["ball", "resultBall ball", "ball new", "x-ball ball", "ball"]
    star_classes = ["lucky-star", "resultBall lucky-star", "lucky-star big"]
    drawn = "".join(
        f'<li class="{classes[i % len(classes)]}"><span>{n}</span></li>'
        for i, n in enumerate(numbers)
    ) + "".join(
        f'<li class="{star_classes[i % len(star_classes)]}">{s}</li>' for i, s in enumerate(stars)
    )
    ascending = "".join(f'<li class="ball">{n}</li>' for n in sorted(map(str, numbers)))
    extra = ""
    if jackpot is not None:
        extra += f'<div class="box jackpot">\n  <span>Jackpot:</span> <b>{jackpot}</b>\n</div>'
    if draw_number is not None:
        extra += f'<p class="meta draw-number">{draw_number}</p>'
    block = (
        f'<div id="ballsDrawn" class="balls"><h2>Drawn</h2><ul>{drawn}</ul>'
        '<li class="other">not a ball</li></div>'
        if balls_drawn
        else f'<div id="ballsSomething"><ul>{drawn}</ul></div>'
    )
    return (
        "<!DOCTYPE html><html><head><title>Results</title>"
        "<script>var balls = [1, 2, 3];</script></head><body>"
        '<nav><ul><li class="ball">99</li><li class="lucky-star">77</li></nav>'
        f'<div id="ballsAscending"><ul>{ascending}</ul></div>'
        f"{block}{extra}<footer>© results</footer></body></html>"
    )


@dataclass
class Reply:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False  # hold the answer until the server is released (past any timeout)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    at: float


class EuroSource:
    """Answers each path from its script, one reply per request; the last reply repeats.

    Unknown paths get 404. Every request is logged, so tests count what reached the source.
    """

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.hits: list[Hit] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Keep test output quiet."""

            def do_GET(self) -> None:
                reply = source._next(self.path, dict(self.headers.items()))
                if reply.stall:
                    source.release.wait(STALL_DEADLINE_S)
                body = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: what the timeout tests want
                self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])

    def _next(self, path: str, headers: dict[str, str]) -> Reply:
        with self._lock:
            self.hits.append(Hit(path, headers, time.monotonic()))
            script = self.scripts.get(path)
            if not script:
                return Reply(404, "<h1>Not found</h1>")
            return script.pop(0) if len(script) > 1 else script[0]

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/results/{{date}}"

    def serve(self, classic_date: str, *replies: Reply) -> str:
        """Script ``/results/<classic_date>``; returns that path."""
        path = f"/results/{classic_date}"
        with self._lock:
            self.scripts[path] = list(replies)
        return path

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.path == path)

    @contextmanager
    def running(self) -> Iterator[EuroSource]:
        thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join(timeout=10)
