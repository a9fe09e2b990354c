"""``asyncml serve-files DIR``: the demo's file server honours Range, so audio.length reads a
WAV's head only (issue 20, point 3); ``python3 -m http.server`` sent every whole file."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from asyncml.cli.demo import RangeHandler
from asyncml.kinds import TaskContext
from asyncml.settings import Settings
from asyncml.tasks.audio import AudioLengthOut, audio_length

from .audio_files import write_audio


class _CountingHandler(RangeHandler):
    requests: ClassVar[list[tuple[str, int]]] = []

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.requests.append((str(self.headers.get("Range")), int(code)))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    _CountingHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_CountingHandler, directory=tmp_path))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_range_is_answered_206_with_its_bytes(served: str, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(bytes(range(256)) * 4)
    got = httpx.get(f"{served}/f.bin", headers={"Range": "bytes=10-19"})
    assert got.status_code == 206
    assert got.headers["content-range"] == "bytes 10-19/1024"
    assert got.content == bytes(range(10, 20))


def test_a_suffix_range_and_an_open_range_are_answered(served: str, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(bytes(range(100)))
    assert httpx.get(f"{served}/f.bin", headers={"Range": "bytes=-3"}).content == bytes(
        [97, 98, 99]
    )
    assert httpx.get(f"{served}/f.bin", headers={"Range": "bytes=98-"}).content == bytes([98, 99])


def test_a_range_past_the_end_is_416(served: str, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"abc")
    got = httpx.get(f"{served}/f.bin", headers={"Range": "bytes=5-9"})
    assert got.status_code == 416
    assert got.headers["content-range"] == "bytes */3"


def test_without_a_range_the_whole_file_is_sent(served: str, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"abc")
    got = httpx.get(f"{served}/f.bin")
    assert (got.status_code, got.content) == (200, b"abc")


def test_audio_length_reads_a_wavs_head_once_from_it(served: str, tmp_path: Path) -> None:
    write_audio(tmp_path / "long.wav", seconds=60.0, sample_rate=16000)
    ctx = TaskContext(
        Settings(_env_file=None, data_dir=tmp_path / "data", fetch_allow_loopback=True),
        scratch_root=tmp_path,
    )
    out = AudioLengthOut.model_validate(audio_length.run({"audio_url": f"{served}/long.wav"}, ctx))
    assert out.audio_length == pytest.approx(60.0, abs=0.001)
    assert _CountingHandler.requests == [("bytes=0-65535", 206)]


def _free_port() -> int:
    """A loopback port free a moment ago: the command binds it itself."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_serve_files_command_serves_a_folder_with_ranges(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(bytes(range(256)))
    port = _free_port()
    command = [sys.executable, "-m", "asyncml", "serve-files", str(tmp_path), "--port", str(port)]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            banner = process.stderr.readline()  # written once the socket listens
            assert f"http://127.0.0.1:{port}/" in banner, banner
            got = httpx.get(f"http://127.0.0.1:{port}/f.bin", headers={"Range": "bytes=0-3"})
            assert (got.status_code, got.content) == (206, bytes([0, 1, 2, 3]))
        finally:
            process.terminate()
            process.wait(timeout=30)
