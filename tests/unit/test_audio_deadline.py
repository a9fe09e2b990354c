"""One download deadline covers everything a task fetches: audio.length against a real local
server that drips its body one byte at a time (loopback only).

audio.length makes up to two requests (the head by HTTP Range, then the whole file); a
deadline per request let a dripping server hold the worker for twice the setting.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asyncml.errors import FetchError
from asyncml.kinds import TaskContext
from asyncml.settings import Settings
from asyncml.tasks.audio import audio_length

TOTAL_S = 1.0  # ASYNCML_FETCH_TOTAL_TIMEOUT_S for these tests
DRIP_INTERVAL_S = 0.05  # one body byte per interval: each well inside the read timeout
FILE_SIZE = 1_000_000
STOP_DEADLINE_S = 30.0  # a handler still dripping at teardown stops by then


class DripServer(ThreadingHTTPServer):
    """Answers every GET (honouring Range) with headers at once, then one byte per interval."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _DripHandler)
        self.release = threading.Event()
        self.requests: list[str | None] = []  # the Range header of each request
        self.arrivals: list[float] = []  # time.monotonic() as each request arrived

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _DripHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DripServer

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        wanted = self.headers.get("Range")
        self.server.arrivals.append(time.monotonic())
        self.server.requests.append(wanted)
        match = re.fullmatch(r"bytes=0-(\d+)", wanted or "")
        if match is not None:
            last = int(match[1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{last}/{FILE_SIZE}")
            length = last + 1
        else:
            self.send_response(200)
            length = FILE_SIZE
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for _ in range(length):
                if self.server.release.wait(DRIP_INTERVAL_S):
                    return
                self.wfile.write(b"R")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the fetcher gave up, as it should


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_DEADLINE_S)


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        fetch_allow_loopback=True,
        fetch_total_timeout_s=TOTAL_S,
        fetch_read_timeout_s=20.0,
    )
    return TaskContext(settings)


def test_dripping_server_fails_the_task_once_its_downloads_reach_the_total_timeout(
    drip: DripServer, ctx: TaskContext
) -> None:
    with pytest.raises(FetchError, match="timed out"):
        audio_length.run({"audio_url": drip.url("slow.wav")}, ctx)

    # Timed from the first request, not the call: importing the probes takes a while too.
    held = time.monotonic() - drip.arrivals[0]
    assert held < TOTAL_S + 0.5, (held, drip.requests)  # a deadline per request: 2 x TOTAL_S
    assert drip.requests == ["bytes=0-65535"]  # no second request once the time is spent


def test_total_timeout_message_states_the_time_really_taken(
    drip: DripServer, ctx: TaskContext
) -> None:
    started = time.monotonic()

    with pytest.raises(FetchError) as caught:
        audio_length.run({"audio_url": drip.url("slow.wav")}, ctx)

    elapsed = time.monotonic() - started
    stated = re.search(r"after (\d+\.\d) s", caught.value.message)
    assert stated is not None, caught.value.message
    assert TOTAL_S <= float(stated[1]) <= elapsed + 0.05
    assert f"{TOTAL_S:g} s" in caught.value.message


def test_each_task_copy_of_the_context_starts_its_own_download_deadline(ctx: TaskContext) -> None:
    # The worker gives each task a copy of its process's context (dataclasses.replace).
    first = dataclasses.replace(ctx, task_id="first")
    budget = first.fetcher.budget
    assert budget is not None
    budget.start(time.monotonic())

    second = dataclasses.replace(first, task_id="second")

    assert first.fetcher.budget is budget  # every request of one task shares it
    assert second.fetcher.budget is not None and second.fetcher.budget.started is None
