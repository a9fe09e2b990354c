"""audio.length reads only the head of an uncompressed WAV (HTTP Range), and falls back to the
whole file when the head does not settle it: against a real local HTTP server."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asyncml.kinds import TaskContext
from asyncml.registry import build_registry
from asyncml.settings import Settings
from asyncml.tasks._audio_errors import AudioTruncated
from asyncml.tasks._probe import probe_audio, probe_wav_head
from asyncml.tasks.audio import AudioLengthOut, audio_length
from asyncml.tasks.debug import audio_decode

from .audio_files import write_audio


class RangeServer:
    """Serves a folder; honours ``Range: bytes=a-b`` unless ``ranges`` is off; logs bytes sent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ranges = True
        self.sent: list[tuple[str, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                data = (server.root / self.path.lstrip("/")).read_bytes()
                wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if wanted and server.ranges:
                    first, last = int(wanted[1]), min(int(wanted[2]), len(data) - 1)
                    body = data[first : last + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                server.sent.append((self.path, len(body)))  # before the client can have it
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


def measure(url: str, ctx: TaskContext) -> AudioLengthOut:
    return AudioLengthOut.model_validate(audio_length.run({"audio_url": url}, ctx))


@pytest.fixture
def range_server(tmp_path: Path) -> Iterator[RangeServer]:
    server = RangeServer(tmp_path)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext(
        Settings(_env_file=None, data_dir=tmp_path, fetch_allow_loopback=True),
        scratch_root=tmp_path,
    )


def test_long_wav_is_measured_from_its_first_64_kib(
    range_server: RangeServer, ctx: TaskContext, tmp_path: Path
) -> None:
    path = write_audio(tmp_path / "long.wav", seconds=300.0, sample_rate=16000)
    out = measure(range_server.url("long.wav"), ctx)
    assert out.audio_length == pytest.approx(300.0, abs=0.001)
    assert (out.frames, out.format) == (probe_audio(path).frames, "WAV")
    assert range_server.sent == [("/long.wav", 64 * 1024)]  # not the 9.6 MB file


def test_server_that_ignores_range_gets_the_whole_file_read(
    range_server: RangeServer, ctx: TaskContext, tmp_path: Path
) -> None:
    write_audio(tmp_path / "long.wav", seconds=30.0, sample_rate=16000)
    range_server.ranges = False
    out = measure(range_server.url("long.wav"), ctx)
    assert out.audio_length == pytest.approx(30.0, abs=0.001)


def test_compressed_formats_fall_back_to_the_whole_file(
    range_server: RangeServer, ctx: TaskContext, tmp_path: Path
) -> None:
    write_audio(tmp_path / "tone.flac", seconds=12.0, sample_rate=16000, format="FLAC")
    out = measure(range_server.url("tone.flac"), ctx)
    assert out.audio_length == pytest.approx(12.0, abs=0.001)
    assert [n for _, n in range_server.sent][-1] == (tmp_path / "tone.flac").stat().st_size


def test_wav_cut_short_is_truncated_from_its_head_alone(
    range_server: RangeServer, ctx: TaskContext, tmp_path: Path
) -> None:
    full = write_audio(tmp_path / "full.wav", seconds=30.0, sample_rate=16000).read_bytes()
    (tmp_path / "cut.wav").write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioTruncated, match="claims 960000 bytes"):
        measure(range_server.url("cut.wav"), ctx)


def test_head_without_a_data_chunk_does_not_settle_it(tmp_path: Path) -> None:
    head = write_audio(tmp_path / "a.wav", seconds=1.0, sample_rate=16000).read_bytes()[:30]
    assert probe_wav_head(head, 32_044) is None
    assert probe_wav_head(b"ID3\x04" + bytes(100), 10_000) is None


def test_naive_baseline_downloads_and_decodes_the_whole_file(
    range_server: RangeServer, ctx: TaskContext, tmp_path: Path
) -> None:
    # debug.audio_decode is what the benchmark measures audio.length against.
    path = write_audio(tmp_path / "long.wav", seconds=20.0, sample_rate=16000, channels=2)
    out = audio_decode.run({"audio_url": range_server.url("long.wav")}, ctx)
    assert out["audio_length"] == pytest.approx(20.0, abs=0.001)
    assert range_server.sent == [("/long.wav", path.stat().st_size)]


def test_benchmark_kinds_are_served_only_when_enabled(tmp_path: Path) -> None:
    def names(debug_kinds: bool) -> set[str]:
        settings = Settings(
            _env_file=None, data_dir=tmp_path, models_bundled=False, debug_kinds=debug_kinds
        )
        return {kind.name for kind in build_registry(settings)}

    assert names(debug_kinds=False) == {"audio.length", "euro.results"}
    assert names(debug_kinds=True) == {
        "audio.length",
        "euro.results",
        "debug.echo",
        "debug.audio_decode",
        "debug.steps",
    }


def test_server_that_ignores_range_is_asked_once_per_task(
    range_server: RangeServer, ctx: TaskContext, tmp_path: Path
) -> None:
    # Its 200 carries the whole file: measured from that response, not downloaded again.
    path = write_audio(tmp_path / "long.wav", seconds=30.0, sample_rate=16000)
    range_server.ranges = False
    out = measure(range_server.url("long.wav"), ctx)
    assert out.audio_length == pytest.approx(30.0, abs=0.001)
    assert range_server.sent == [("/long.wav", path.stat().st_size)]


def test_wav_smaller_than_the_head_is_asked_once(
    range_server: RangeServer, ctx: TaskContext, tmp_path: Path
) -> None:
    path = write_audio(tmp_path / "short.wav", seconds=0.5, sample_rate=16000)
    out = measure(range_server.url("short.wav"), ctx)
    assert out.audio_length == pytest.approx(0.5, abs=0.001)
    assert range_server.sent == [("/short.wav", path.stat().st_size)]


class _Reported:
    """Stands in for the worker's reporter: what the task told its watchers."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float | None]] = []
        self.logs: list[str] = []

    def progress(self, done: float, total: float | None, message: str | None) -> None:
        self.steps.append((done, total))

    def log(self, message: str, level: str) -> None:
        self.logs.append(message)

    def output(self, partial: object) -> None:
        raise AssertionError("audio.length streams no partial output")


def test_audio_length_tells_its_watchers_the_path_it_took_and_the_bytes_it_read(
    range_server: RangeServer, ctx: TaskContext, tmp_path: Path
) -> None:
    path = write_audio(tmp_path / "long.wav", seconds=300.0, sample_rate=16000)
    reported = _Reported()
    measure(range_server.url("long.wav"), dataclasses.replace(ctx, reporter=reported))
    assert any("Range" in line for line in reported.logs), reported.logs
    assert any("WAV header" in line for line in reported.logs), reported.logs
    assert reported.steps == [(64 * 1024, path.stat().st_size)]
