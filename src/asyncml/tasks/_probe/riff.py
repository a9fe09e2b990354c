"""WAV, WAVEX and RF64: the RIFF chunks, read ourselves.

libsndfile silently clamps a WAV's frame count to the bytes present, so a cut file looks like
a valid shorter one. We walk the chunks and compare the ``data`` chunk's declared size with
the bytes after it: more declared than present is ``AudioTruncated``. A size of 0 or
0xFFFFFFFF is what streaming writers leave behind; it claims nothing, and for PCM the length
is computed from the bytes present.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

from asyncml.tasks._audio_errors import AudioTruncated
from asyncml.tasks._probe.info import (
    AudioInfo,
    check_last_frame_readable,
    check_plausible,
    seconds,
)

# Codecs whose frames are exactly block_align bytes: PCM, IEEE float, A-law, mu-law, extensible.
_BLOCK_CODECS = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})
_SIZE_NOT_WRITTEN = frozenset({0, 0xFFFFFFFF})


@dataclass(frozen=True)
class _RiffData:
    offset: int
    declared: int
    codec: int
    block_align: int
    channels: int
    bits: int  # bits per sample; 0 when the fmt chunk is too short to say


_PCM_CODECS = (1, 3, 0xFFFE)  # integer PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE


def probe_wav_head(head: bytes, total_size: int) -> AudioInfo | None:
    """The length of an uncompressed WAV from its first bytes and the file's full size.

    For a fetch that asks only for the head of the file (an HTTP Range request): the
    ``data`` chunk's declared size gives the frames, checked against ``total_size`` (what
    the server says the file holds) so a file shorter than its header claims is still
    ``AudioTruncated``. None when the head does not settle it (not a little-endian RIFF
    WAVE of PCM or float samples, no ``data`` chunk in the head, a streaming writer's size
    of 0 or 0xFFFFFFFF): the caller then downloads the file and probes it whole.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    codec = channels = rate = block_align = bits = 0
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (chunk_size,) = struct.unpack("<I", head[pos + 4 : pos + 8])
        if chunk_id == b"fmt " and pos + 8 + 14 <= len(head):
            codec, channels, rate, _, block_align = struct.unpack(
                "<HHIIH", head[pos + 8 : pos + 22]
            )
            if chunk_size >= 16 and pos + 8 + 16 <= len(head):
                (bits,) = struct.unpack("<H", head[pos + 22 : pos + 24])
        elif chunk_id == b"data":
            if codec not in _PCM_CODECS or block_align <= 0 or chunk_size in (0, 0xFFFFFFFF):
                return None
            check_plausible("WAV header", rate, channels)
            _check_frame_size("WAV", block_align, channels, bits)
            present = total_size - (pos + 8)
            if chunk_size > present:
                raise AudioTruncated(
                    f"the WAV file is truncated: its header claims {chunk_size} bytes of "
                    f"audio, the file holds {max(0, present)}"
                )
            frames = chunk_size // block_align
            return AudioInfo(
                duration_s=frames / rate,
                sample_rate=rate,
                channels=channels,
                frames=frames,
                format="WAV",
            )
        pos += 8 + chunk_size + (chunk_size & 1)
    return None


def riff_data_chunk(path: Path, size: int) -> _RiffData | None:
    """Walk the RIFF/RIFX/RF64 chunks to the ``data`` chunk.

    None if the file is not a RIFF WAVE or has no ``data`` chunk; AudioTruncated if the file
    ends inside a chunk before the ``data`` chunk starts.
    """
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        ds64_data_size: int | None = None
        codec = block_align = channels = bits = 0
        pos = 12
        while pos < size:
            fh.seek(pos)
            chunk = fh.read(8)
            if len(chunk) < 8:
                break
            chunk_id = chunk[:4]
            (chunk_size,) = struct.unpack(endian + "I", chunk[4:])
            if chunk_id == b"ds64":
                body = fh.read(16)
                if len(body) == 16:
                    (ds64_data_size,) = struct.unpack("<Q", body[8:16])
            elif chunk_id == b"fmt ":
                body = fh.read(min(chunk_size, 16))
                if len(body) >= 14:
                    codec, channels, _, _, block_align = struct.unpack(endian + "HHIIH", body[:14])
                if len(body) == 16:
                    (bits,) = struct.unpack(endian + "H", body[14:])
            elif chunk_id == b"data":
                declared = chunk_size
                if chunk_size == 0xFFFFFFFF and ds64_data_size is not None:
                    declared = ds64_data_size
                return _RiffData(pos + 8, declared, codec, block_align, channels, bits)
            pos = _next_chunk(fh, pos + 8 + chunk_size, odd=bool(chunk_size & 1))
        if pos == size:
            return None
    raise AudioTruncated("the WAV file is truncated: it ends before its audio data starts")


def _next_chunk(fh: BinaryIO, unpadded: int, *, odd: bool) -> int:
    """Where the next chunk starts: odd chunks get a pad byte, unless the writer forgot it."""
    if not odd:
        return unpadded
    fh.seek(unpadded)
    peek = fh.read(5)
    if not _is_chunk_id(peek[1:5]) and _is_chunk_id(peek[0:4]):
        return unpadded
    return unpadded + 1


def _is_chunk_id(raw: bytes) -> bool:
    return len(raw) == 4 and all(0x20 <= byte < 0x7F for byte in raw)


def riff_frames(snd: sf.SoundFile, path: Path, size: int, fmt: str) -> int:
    try:
        riff = riff_data_chunk(path, size)
    except AudioTruncated:
        riff = None  # libsndfile found audio data where our walk did not: trust it
    if riff is None:
        frames = int(snd.frames)
        check_last_frame_readable(snd, frames, fmt)
        return frames
    present = size - riff.offset
    block_align = riff.block_align if riff.codec in _BLOCK_CODECS else 0
    if block_align > 0:
        _check_frame_size(fmt, block_align, riff.channels, riff.bits)
    if riff.declared in _SIZE_NOT_WRITTEN:
        return max(present, 0) // block_align if block_align > 0 else int(snd.frames)
    if riff.declared > present:
        if block_align > 0:
            claim = seconds(riff.declared // block_align, snd.samplerate)
            held = seconds(max(present, 0) // block_align, snd.samplerate)
            detail = f"{riff.declared} bytes of audio ({claim}) but the file holds {held}"
        else:
            detail = f"{riff.declared} bytes of audio but the file holds {max(present, 0)} bytes"
        raise AudioTruncated(f"the {fmt} file is truncated: its header claims {detail}")
    if block_align > 0:
        return riff.declared // block_align
    return int(snd.frames)


def _check_frame_size(fmt: str, block_align: int, channels: int, bits: int) -> None:
    """A PCM frame holds one sample per channel, so it is at least that many bytes.

    The length is counted as data bytes / block align: a header giving 16-bit stereo frames
    of 1 byte claims four times the audio its bytes can hold.
    """
    needed = channels * max(1, (bits + 7) // 8)
    if block_align < needed:
        raise AudioTruncated(
            f"the {fmt} header claims more audio than its bytes hold: {channels} channels of "
            f"{bits}-bit samples need {needed} bytes a frame, the header says {block_align}"
        )
