"""audio.length: the duration of an audio file given by URL."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, HttpUrl

from asyncml.kinds import Classic, Limits, TaskContext, task_kind

# Each download lives in a folder named for the worker process that made it, so the folders
# of a process that was killed mid-task can be told apart and removed.
SCRATCH_PREFIX = "asyncml-audio-"


def remove_orphaned_scratch(root: Path | None = None) -> int:
    """Delete download folders whose process is gone; how many were removed."""
    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid_text = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
        downloaded = ctx.fetcher.download(str(inp.audio_url), Path(tmp) / "audio")
        info = probe_audio(downloaded.path)
    return AudioLengthOut(
        audio_length=info.duration_s,
        sample_rate=info.sample_rate,
        channels=info.channels,
        frames=info.frames,
        format=info.format,
    )
