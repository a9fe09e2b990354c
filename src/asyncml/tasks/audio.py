"""audio.length: the duration of an audio file given by URL."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, HttpUrl

from asyncml.kinds import Classic, Limits, TaskContext, task_kind


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

    The download is streamed to a temporary file under the size cap and the SSRF guard;
    the header's claim is checked against the bytes received, and only formats whose
    header has no length are decoded in full.
    """
    from asyncml.tasks._probe import probe_audio  # soundfile loads only in workers

    with tempfile.TemporaryDirectory(prefix="asyncml-audio-") as tmp:
        downloaded = ctx.fetcher.download(str(inp.audio_url), Path(tmp) / "audio")
        info = probe_audio(downloaded.path)
    return AudioLengthOut(
        audio_length=info.duration_s,
        sample_rate=info.sample_rate,
        channels=info.channels,
        frames=info.frames,
        format=info.format,
    )
