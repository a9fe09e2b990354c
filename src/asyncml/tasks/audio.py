"""audio.length: the duration of an audio file given by URL."""

from __future__ import annotations

import dataclasses
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, HttpUrl

from asyncml.errors import FetchBlocked, FetchError
from asyncml.kinds import Classic, Limits, TaskContext, task_kind
from asyncml.tasks._audio_errors import AudioError, AudioNotAudio, AudioTruncated

if TYPE_CHECKING:
    from asyncml.tasks._probe import AudioInfo

HEAD_BYTES = 64 * 1024
_CONTENT_RANGE = re.compile(r"^bytes 0-(\d+)/(\d+)$")
_COMPRESSED = {".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac"}


def _probe_head(ctx: TaskContext, url: str) -> AudioInfo | None:
    """Ask for the first 64 KiB only (HTTP Range); the length if the head settles it.

    An uncompressed WAV's header says how much audio follows, and the server's
    ``Content-Range`` says how much there is: a 300 s file costs one small request instead
    of a 50 MB download. Anything else (a server that ignores Range, a compressed format, a
    head that does not settle it, any error) returns None and the whole file is fetched,
    which reports errors as usual. A refused destination is refused here already.
    """
    from asyncml.tasks._probe import probe_audio, probe_wav_head

    if PurePosixPath(urlsplit(url).path).suffix.lower() in _COMPRESSED:
        return None  # their length is not in the head: fetch the whole file at once
    fetcher = dataclasses.replace(ctx.fetcher, max_bytes=HEAD_BYTES)
    try:
        got = fetcher.get(url, headers={"Range": f"bytes=0-{HEAD_BYTES - 1}"})
    except FetchBlocked:
        raise
    except FetchError:
        return None  # e.g. a server that ignored Range and sent more than the head
    match = _CONTENT_RANGE.match(got.headers.get("content-range", ""))
    if got.status_code == 206 and match is not None:
        return probe_wav_head(got.content, int(match.group(2)))
    if got.status_code == 200 and got.content:  # the whole file fitted in the head's budget
        whole = ctx.scratch_dir() / "head"
        whole.write_bytes(got.content)
        return probe_audio(whole, got.headers.get("content-type"))
    return None


class AudioLengthIn(BaseModel):
    audio_url: HttpUrl = Field(description="http(s) URL of a WAV, FLAC, OGG or MP3 file")


class AudioLengthOut(BaseModel):
    audio_length: float = Field(description="Duration in seconds (the classic field name)")
    sample_rate: int
    channels: int
    frames: int
    format: str


@task_kind(
    "audio.length",
    queue="audio",
    limits=Limits(timeout_s=180),
    classic=Classic(path="/audio/length"),
)
def audio_length(inp: AudioLengthIn, ctx: TaskContext) -> AudioLengthOut:
    """Length of an audio file, read from its header when the format gives it.

    The download is streamed to the task's scratch folder under the size cap and the SSRF guard;
    the header's claim is checked against the bytes received, and only formats whose
    header has no length are decoded in full.
    """
    from asyncml.tasks._probe import probe_audio  # soundfile loads only in workers

    info = _probe_head(ctx, str(inp.audio_url))
    if info is None:
        downloaded = ctx.fetcher.download(str(inp.audio_url), ctx.scratch_dir() / "audio")
        info = probe_audio(downloaded.path, downloaded.content_type)
    return AudioLengthOut(
        audio_length=info.duration_s,
        sample_rate=info.sample_rate,
        channels=info.channels,
        frames=info.frames,
        format=info.format,
    )


# The kind's errors are raised by the probes; exported from here, they are known (their types
# mapped back to them) wherever the kind is imported.
__all__ = [
    "AudioError",
    "AudioLengthIn",
    "AudioLengthOut",
    "AudioNotAudio",
    "AudioTruncated",
    "audio_length",
]
