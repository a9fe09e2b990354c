"""What a probe reports, the limits a header must respect, and helpers every family uses."""

from __future__ import annotations

from dataclasses import dataclass

import soundfile as sf

from asyncml.tasks._audio_errors import AudioNotAudio, AudioTruncated

# libsndfile reports SF_COUNT_MAX (2**63 - 1) frames when the header does not say.
UNKNOWN_FRAMES = 2**62
NOT_AUDIO = "not a recognised audio format (WAV, FLAC, OGG, MP3 and others libsndfile reads)"


@dataclass(frozen=True)
class AudioInfo:
    """What a probe found; ``frames`` counts samples per channel."""

    duration_s: float
    sample_rate: int
    channels: int
    frames: int
    format: str


# Headers beyond these are lies or attacks. Real audio runs from 8 kHz (telephony) to 768 kHz
# (the highest rate converters offer); 1 kHz leaves room for odd recorders. 64 channels
# covers ambisonics. docs/kinds.md (audio.length) states the same range.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64


def check_plausible(source: str, sample_rate: int, channels: int) -> None:
    """Refuse a rate or channel count no real audio has, whatever the format.

    The length is frames / rate, so a header's rate is as much a claim as its frame count: a
    WAV saying 1 Hz over 16,000 frames would otherwise be answered as 4 h 26 min.
    """
    if not (MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE and 0 < channels <= MAX_CHANNELS):
        raise AudioNotAudio(
            f"{source} gives an implausible {sample_rate} Hz and {channels} channels "
            f"(accepted: at least {MIN_SAMPLE_RATE} Hz and at most {MAX_SAMPLE_RATE} Hz, "
            f"1 to {MAX_CHANNELS} channels)"
        )


def error_reason(exc: Exception) -> str:
    """libsndfile's own words, without soundfile's "Error opening '<server path>'" prefix."""
    words = getattr(exc, "error_string", None)
    return words if isinstance(words, str) and words else str(exc)


def seconds(frames: int, sample_rate: int) -> str:
    return f"{frames / sample_rate:.2f} s"


def check_last_frame_readable(snd: sf.SoundFile, frames: int, fmt: str) -> None:
    """Seek to the last frame the header claims and read it: a cut file has no such frame."""
    if frames == 0:
        return
    claimed = seconds(frames, snd.samplerate)
    try:
        snd.seek(frames - 1)
        got = len(snd.read(1, dtype="float32", always_2d=True))
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioTruncated(f"the {fmt} file ends before the {claimed} its header claims") from exc
    if got != 1:
        raise AudioTruncated(f"the {fmt} file ends before the {claimed} its header claims")
