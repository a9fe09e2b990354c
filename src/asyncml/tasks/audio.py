"""audio.length: the duration of an audio file given by URL."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, HttpUrl

from asyncml.errors import FetchError
from asyncml.kinds import Classic, Limits, TaskContext, task_kind
from asyncml.tasks._audio_errors import AudioError, AudioNotAudio, AudioTruncated

if TYPE_CHECKING:
    from asyncml.tasks._probe import AudioInfo

HEAD_BYTES = 64 * 1024
_CONTENT_RANGE = re.compile(r"^bytes 0-(\d+)/(\d+)$")
_COMPRESSED = {".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac"}


def _measure(ctx: TaskContext, url: str) -> AudioInfo:
    """Ask for the first 64 KiB only (HTTP Range); fetch the whole file only when needed.

    An uncompressed WAV's header says how much audio follows, and the server's
    ``Content-Range`` says how much there is: a 300 s file costs one small request instead
    of a 50 MB download. A server that ignores Range answers 200 with the whole file: that
    same response is saved and measured, never downloaded a second time. Only a head that
    does not settle it (not a WAV, a WAV whose head lies) costs a second, whole download; a
    compressed format (its length is not in the head) is fetched whole at once.
    """
    from asyncml.tasks._probe import probe_audio, probe_wav_head
    from asyncml.tasks._probe.info import NOT_AUDIO

    dest = ctx.scratch_dir() / "audio"
    if PurePosixPath(urlsplit(url).path).suffix.lower() in _COMPRESSED:
        ctx.log("a compressed format: fetching the whole file")
        whole = ctx.fetcher.download(url, dest)
        return probe_audio(whole.path, whole.content_type)
    ctx.log(f"reading the head only: HTTP Range bytes=0-{HEAD_BYTES - 1}")
    try:
        got = ctx.fetcher.download(url, dest, headers={"Range": f"bytes=0-{HEAD_BYTES - 1}"})
    except FetchError as exc:
        if exc.upstream_status == 416:  # no byte 0 to send: the file is empty
            raise AudioNotAudio(f"the file is empty (0 bytes): {NOT_AUDIO}") from exc
        raise
    match = _CONTENT_RANGE.match(got.content_range or "")
    if got.status_code == 206 and match is not None:
        last, total = int(match.group(1)), int(match.group(2))
        ctx.progress(last + 1, total, "bytes fetched of the file")
        if last + 1 >= total:  # the range held the whole file
            return probe_audio(got.path, got.content_type)
        info = probe_wav_head(got.path.read_bytes(), total)
        if info is not None:
            ctx.log("the length comes from the WAV header, checked against the file's size")
            return info
    elif got.status_code != 206:  # Range ignored: this response is the whole file
        ctx.log("the server ignored Range: measuring the whole file it sent")
        return probe_audio(got.path, got.content_type)
    ctx.log("the head does not settle it: fetching the whole file")
    whole = ctx.fetcher.download(url, dest)
    return probe_audio(whole.path, whole.content_type)


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
    info = _measure(ctx, str(inp.audio_url))  # soundfile loads only in workers
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
