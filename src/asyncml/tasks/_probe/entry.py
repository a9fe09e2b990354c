"""The entry point: open with libsndfile, then hand the header's claim to its family's check."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from asyncml.tasks._audio_errors import AudioError, AudioNotAudio
from asyncml.tasks._probe.decode import decoded_frames, probe_by_decoding_with_librosa
from asyncml.tasks._probe.info import (
    NOT_AUDIO,
    UNKNOWN_FRAMES,
    AudioInfo,
    check_last_frame_readable,
    check_plausible,
    error_reason,
)
from asyncml.tasks._probe.mpeg import mpeg_frames
from asyncml.tasks._probe.ogg import check_ogg_tail
from asyncml.tasks._probe.riff import riff_data_chunk, riff_frames
from asyncml.tasks._probe.sniff import refuse_plainly_not_audio


def probe_audio(path: Path, content_type: str | None = None) -> AudioInfo:
    """Length and layout of the audio in ``path``; never a length the bytes do not hold.

    ``content_type`` is what the server called the body: a body libsndfile cannot open that
    is plainly not audio (text, too small, a non-audio type) is refused before the slow
    decode fallback. Raises AudioNotAudio for files no decoder recognises (including empty ones),
    AudioTruncated for files shorter than their header claims, and AudioError for other
    unreadable audio. A missing ``path`` is the caller's bug and raises OSError.
    """
    size = path.stat().st_size
    if size == 0:
        raise AudioNotAudio(f"the file is empty (0 bytes): {NOT_AUDIO}")
    try:
        snd = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError) as exc:
        riff_data_chunk(path, size)  # a WAV cut before its audio is truncated, not "not audio"
        refuse_plainly_not_audio(path, content_type)
        return probe_by_decoding_with_librosa(path, libsndfile_error=error_reason(exc))
    with snd:
        fmt = str(snd.format)
        sample_rate = int(snd.samplerate)
        channels = int(snd.channels)
        check_plausible(f"{fmt} header", sample_rate, channels)
        try:
            frames = _checked_frames(snd, path, size, fmt)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioError(f"cannot read the {fmt} audio: {error_reason(exc)}") from exc
    return AudioInfo(
        duration_s=frames / sample_rate,
        sample_rate=sample_rate,
        channels=channels,
        frames=frames,
        format=fmt,
    )


def _checked_frames(snd: sf.SoundFile, path: Path, size: int, fmt: str) -> int:
    """The frame count, after checking the header's claim against the bytes present."""
    if fmt in ("WAV", "WAVEX", "RF64"):
        return riff_frames(snd, path, size, fmt)
    if fmt == "MP3":
        return mpeg_frames(snd, path)
    frames = int(snd.frames)
    if frames >= UNKNOWN_FRAMES or not snd.seekable():
        return decoded_frames(path)
    if fmt == "OGG":
        check_ogg_tail(path, size)
        return frames
    check_last_frame_readable(snd, frames, fmt)
    return frames
