"""Audio length of a local file, from the container header when the header can be trusted.

Decoding a whole file is what makes length probes slow, so the header (via libsndfile) comes
first. But a header is a claim, and libsndfile 1.2.2 treats a file that is shorter than its
header claims differently per format, so each format's claim is checked against the bytes
actually present before it is believed:

``WAV`` / ``WAVEX`` / ``RF64``
    libsndfile silently clamps the frame count to the bytes present, so a cut file looks like
    a valid shorter one. We read the RIFF chunks ourselves and compare the ``data`` chunk's
    declared size with the bytes after it: more declared than present is ``AudioTruncated``.
    A size of 0 or 0xFFFFFFFF is what streaming writers leave behind; it claims nothing, and
    for PCM the length is computed from the bytes present.
``FLAC``
    libsndfile reports STREAMINFO's total even for a cut file; seeking to the last frame then
    fails. We seek to the last frame and read it: failure is ``AudioTruncated``.
``OGG``
    There is no length in a header: libsndfile takes the last granule position, i.e. the
    length of what is present. A cut shows as an incomplete last page or a last page without
    the end-of-stream flag; we check the pages at the tail and report ``AudioTruncated``.
``MP3``
    The length comes from the Xing/Info header, or without one from mpg123's estimate (3 s
    for a 30 s file in our tests); libsndfile reports either even for a cut file. We
    walk the MPEG frame headers (no decoding) to count the frames present: a cut frame, or
    fewer frames than the Xing header claims, is ``AudioTruncated``; without a Xing header the
    counted length wins over the estimate.
anything else libsndfile opens
    Seek to the last frame and read it, which catches formats that trust their header.
    Formats libsndfile clamps like WAV (AIFF, AU, CAF, ...) then report the length of the
    bytes present: right for what can be played, though not flagged as truncated.

When the header gives no length, the frames are counted by decoding with libsndfile in
blocks. Only when libsndfile cannot open the file at all does librosa (imported lazily: it is
heavy) get a try at a full decode. Errors from either library never escape: they become an
``AudioError`` subclass with a readable message.
"""

from __future__ import annotations

import dataclasses
import mmap
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
from celery.exceptions import SoftTimeLimitExceeded

from asyncml.errors import AudioError, AudioNotAudio, AudioTruncated

# libsndfile reports SF_COUNT_MAX (2**63 - 1) frames when the header does not say.
_UNKNOWN_FRAMES = 2**62
_DECODE_BLOCK_FRAMES = 65536
_NOT_AUDIO = "not a recognised audio format (WAV, FLAC, OGG, MP3 and others libsndfile reads)"


@dataclass(frozen=True)
class AudioInfo:
    """What a probe found; ``frames`` counts samples per channel."""

    duration_s: float
    sample_rate: int
    channels: int
    frames: int
    format: str


# Headers beyond these are lies or attacks (the highest real rates are 768 kHz; 64 channels
# covers ambisonics); a full decode of a file larger than this could hold gigabytes.
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
MAX_FULL_DECODE_BYTES = 50_000_000


def probe_audio(path: Path) -> AudioInfo:
    """Length and layout of the audio in ``path``; never a length the bytes do not hold.

    Raises AudioNotAudio for files no decoder recognises (including empty ones),
    AudioTruncated for files shorter than their header claims, and AudioError for other
    unreadable audio. A missing ``path`` is the caller's bug and raises OSError.
    """
    size = path.stat().st_size
    if size == 0:
        raise AudioNotAudio(f"the file is empty (0 bytes): {_NOT_AUDIO}")
    try:
        snd = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError) as exc:
        _riff_data_chunk(path, size)  # a WAV cut before its audio is truncated, not "not audio"
        return _probe_by_decoding_with_librosa(path, libsndfile_error=_reason(exc))
    with snd:
        fmt = str(snd.format)
        sample_rate = int(snd.samplerate)
        channels = int(snd.channels)
        if not (0 < sample_rate <= MAX_SAMPLE_RATE and 0 < channels <= MAX_CHANNELS):
            raise AudioNotAudio(
                f"{fmt} header gives an implausible {sample_rate} Hz and {channels} channels "
                f"(at most {MAX_SAMPLE_RATE} Hz and {MAX_CHANNELS} channels are accepted)"
            )
        try:
            frames = _checked_frames(snd, path, size, fmt)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioError(f"cannot read the {fmt} audio: {_reason(exc)}") from exc
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
        return _riff_frames(snd, path, size, fmt)
    if fmt == "MP3":
        return _mpeg_frames(snd, path)
    frames = int(snd.frames)
    if frames >= _UNKNOWN_FRAMES or not snd.seekable():
        return _decoded_frames(path)
    if fmt == "OGG":
        _check_ogg_tail(path, size)
        return frames
    _check_last_frame_readable(snd, frames, fmt)
    return frames


def _reason(exc: Exception) -> str:
    """libsndfile's own words, without soundfile's "Error opening '<server path>'" prefix."""
    reason = getattr(exc, "error_string", None)
    return reason if isinstance(reason, str) and reason else str(exc)


def _seconds(frames: int, sample_rate: int) -> str:
    return f"{frames / sample_rate:.2f} s"


def _check_last_frame_readable(snd: sf.SoundFile, frames: int, fmt: str) -> None:
    """Seek to the last frame the header claims and read it: a cut file has no such frame."""
    if frames == 0:
        return
    claimed = _seconds(frames, snd.samplerate)
    try:
        snd.seek(frames - 1)
        got = len(snd.read(1, dtype="float32", always_2d=True))
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioTruncated(f"the {fmt} file ends before the {claimed} its header claims") from exc
    if got != 1:
        raise AudioTruncated(f"the {fmt} file ends before the {claimed} its header claims")


class _ForwardOnlySoundFile(sf.SoundFile):  # type: ignore[misc]  # soundfile has no stubs
    """A SoundFile that never seeks: soundfile re-seeks after every read of a seekable file,
    and libsndfile fails that seek at the end of a FLAC stream whose length it does not know.
    """

    def seekable(self) -> bool:
        return False


def _decoded_frames(path: Path) -> int:
    """Count frames by decoding in blocks: memory stays bounded whatever the length."""
    with _ForwardOnlySoundFile(path) as snd:
        block = np.empty((_DECODE_BLOCK_FRAMES, snd.channels), dtype=np.float32)
        total = 0
        while True:
            got = len(snd.read(out=block))
            if got == 0:
                return total
            total += got


def _probe_by_decoding_with_librosa(path: Path, *, libsndfile_error: str) -> AudioInfo:
    """Last resort for files libsndfile cannot open: decode fully with librosa (audioread).

    librosa warns that audioread support is deprecated, and audioread imports deprecated
    stdlib modules; neither is the caller's concern, so warnings are silenced here.
    """
    if path.stat().st_size > MAX_FULL_DECODE_BYTES:  # a full decode holds every sample
        raise AudioError(
            f"cannot read the file with libsndfile ({libsndfile_error}), and at "
            f"{path.stat().st_size} bytes it is too large to decode in full "
            f"(at most {MAX_FULL_DECODE_BYTES} bytes)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import librosa

            signal, rate = librosa.load(path, sr=None, mono=False)
    except SoftTimeLimitExceeded:
        raise  # the task's time is up: that is a timeout, not a verdict on the file
    except Exception as exc:  # any decoder failure means the same thing to the caller
        raise AudioNotAudio(f"{_NOT_AUDIO}: {libsndfile_error}") from exc
    frames = int(signal.shape[-1])
    channels = 1 if signal.ndim == 1 else int(signal.shape[0])
    sample_rate = int(rate)
    if sample_rate <= 0 or frames == 0:
        raise AudioNotAudio(f"{_NOT_AUDIO}: {libsndfile_error}")
    return AudioInfo(
        duration_s=frames / sample_rate,
        sample_rate=sample_rate,
        channels=channels,
        frames=frames,
        format="UNKNOWN",
    )


# --- WAV family -------------------------------------------------------------------------------

# Codecs whose frames are exactly block_align bytes: PCM, IEEE float, A-law, mu-law, extensible.
_BLOCK_CODECS = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})
_SIZE_NOT_WRITTEN = frozenset({0, 0xFFFFFFFF})


@dataclass(frozen=True)
class _RiffData:
    offset: int
    declared: int
    codec: int
    block_align: int


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
    codec = channels = rate = block_align = 0
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (chunk_size,) = struct.unpack("<I", head[pos + 4 : pos + 8])
        if chunk_id == b"fmt " and pos + 8 + 14 <= len(head):
            codec, channels, rate, _, block_align = struct.unpack(
                "<HHIIH", head[pos + 8 : pos + 22]
            )
        elif chunk_id == b"data":
            if codec not in _PCM_CODECS or block_align <= 0 or chunk_size in (0, 0xFFFFFFFF):
                return None
            if not (0 < rate <= MAX_SAMPLE_RATE and 0 < channels <= MAX_CHANNELS):
                raise AudioNotAudio(
                    f"WAV header gives an implausible {rate} Hz and {channels} channels"
                )
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


def _riff_data_chunk(path: Path, size: int) -> _RiffData | None:
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
        codec, block_align = 0, 0
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
                body = fh.read(14)
                if len(body) == 14:
                    codec, _, _, _, block_align = struct.unpack(endian + "HHIIH", body)
            elif chunk_id == b"data":
                declared = chunk_size
                if chunk_size == 0xFFFFFFFF and ds64_data_size is not None:
                    declared = ds64_data_size
                return _RiffData(pos + 8, declared, codec, block_align)
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


def _riff_frames(snd: sf.SoundFile, path: Path, size: int, fmt: str) -> int:
    try:
        riff = _riff_data_chunk(path, size)
    except AudioTruncated:
        riff = None  # libsndfile found audio data where our walk did not: trust it
    if riff is None:
        frames = int(snd.frames)
        _check_last_frame_readable(snd, frames, fmt)
        return frames
    present = size - riff.offset
    block_align = riff.block_align if riff.codec in _BLOCK_CODECS else 0
    if riff.declared in _SIZE_NOT_WRITTEN:
        return max(present, 0) // block_align if block_align > 0 else int(snd.frames)
    if riff.declared > present:
        if block_align > 0:
            claim = _seconds(riff.declared // block_align, snd.samplerate)
            held = _seconds(max(present, 0) // block_align, snd.samplerate)
            detail = f"{riff.declared} bytes of audio ({claim}) but the file holds {held}"
        else:
            detail = f"{riff.declared} bytes of audio but the file holds {max(present, 0)} bytes"
        raise AudioTruncated(f"the {fmt} file is truncated: its header claims {detail}")
    if block_align > 0:
        return riff.declared // block_align
    return int(snd.frames)


# --- Ogg --------------------------------------------------------------------------------------

_OGG_HEADER_BYTES = 27
_OGG_MAX_PAGE = _OGG_HEADER_BYTES + 255 + 255 * 255
_OGG_END_OF_STREAM = 0x04


def _ogg_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_OGG_CRC_TABLE = _ogg_crc_table()


def _ogg_page_crc(page: bytes) -> int:
    crc = 0
    table = _OGG_CRC_TABLE
    for i, byte in enumerate(page):
        if 22 <= i < 26:  # the checksum field counts as zeros
            byte = 0
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _ogg_page_end(tail: bytes, start: int) -> int | None:
    """End offset of the checksum-valid page at ``start``, or None (cut, or not a page)."""
    if start + _OGG_HEADER_BYTES > len(tail) or tail[start + 4] != 0:
        return None
    segments = tail[start + 26]
    body_at = start + _OGG_HEADER_BYTES + segments
    if body_at > len(tail):
        return None
    end = body_at + sum(tail[start + _OGG_HEADER_BYTES : body_at])
    if end > len(tail):
        return None
    page = tail[start:end]
    (stored,) = struct.unpack("<I", page[22:26])
    return end if _ogg_page_crc(page) == stored else None


def _check_ogg_tail(path: Path, size: int) -> None:
    """The last page must be complete and carry end-of-stream, or the stream was cut.

    Scanning back from the end, the first checksum-valid page is the last real one: a
    "OggS" inside compressed data fails the checksum, and so does a cut page.
    """
    window = min(size, 2 * _OGG_MAX_PAGE)
    with path.open("rb") as fh:
        fh.seek(size - window)
        tail = fh.read(window)
    start = tail.rfind(b"OggS")
    while start >= 0:
        end = _ogg_page_end(tail, start)
        if end is not None:
            trailing = tail[end : end + 4]
            if trailing and b"OggS".startswith(trailing):
                raise AudioTruncated("the OGG file is truncated: its last page is incomplete")
            if not tail[start + 5] & _OGG_END_OF_STREAM:
                raise AudioTruncated(
                    "the OGG file is truncated: the stream ends without an end-of-stream page"
                )
            return
        start = tail.rfind(b"OggS", 0, start)
    raise AudioTruncated("the OGG file is truncated: no complete page at its end")


# --- MPEG audio (MP3) -------------------------------------------------------------------------

_MPEG_BITRATES_KBPS = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Version bits 0b00 = MPEG-2.5, 0b10 = MPEG-2, 0b11 = MPEG-1 (0b01 is reserved).
_MPEG_SAMPLE_RATES = {
    0b11: (44100, 48000, 32000),
    0b10: (22050, 24000, 16000),
    0b00: (11025, 12000, 8000),
}
_LAME_ENCODERS = (b"LAME", b"Lavf", b"Lavc")


@dataclass(frozen=True)
class _MpegFrame:
    stream: tuple[int, int, int]  # version bits, layer, sample-rate index: fixed within a stream
    length: int
    samples: int
    side_info_at: int  # offset of a Xing/Info tag from the frame start
    offset: int = 0  # where in the file, when found by _resync


def _mpeg_frame(data: mmap.mmap, pos: int) -> _MpegFrame | None:
    """Parse the frame header at ``pos``; None if it is not one (free format included)."""
    if pos + 4 > len(data):
        return None
    (word,) = struct.unpack_from(">I", data, pos)
    if word >> 21 != 0x7FF:
        return None
    version = (word >> 19) & 3
    layer = 4 - ((word >> 17) & 3)
    bitrate_index = (word >> 12) & 0xF
    rate_index = (word >> 10) & 3
    if version == 0b01 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 0b11
    bitrate = _MPEG_BITRATES_KBPS[(1 if mpeg1 else 2, layer)][bitrate_index] * 1000
    rate = _MPEG_SAMPLE_RATES[version][rate_index]
    padding = (word >> 9) & 1
    if layer == 1:
        length, samples = (12 * bitrate // rate + padding) * 4, 384
    elif layer == 2 or mpeg1:
        length, samples = 144 * bitrate // rate + padding, 1152
    else:
        length, samples = 72 * bitrate // rate + padding, 576
    mono = (word >> 6) & 3 == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    crc = 2 if not (word >> 16) & 1 else 0
    return _MpegFrame((version, layer, rate_index), length, samples, 4 + crc + side_info)


@dataclass(frozen=True)
class _MpegScan:
    frames: int | None  # audio frames present; None: no frame header found
    samples_per_frame: int
    claimed_frames: int | None  # from a Xing/Info header
    trim: int  # encoder delay + padding that a gapless decoder drops
    cut_mid_frame: bool


def _skip_id3v2(data: mmap.mmap) -> int:
    pos = 0
    while data[pos : pos + 3] == b"ID3" and pos + 10 <= len(data):
        flags = data[pos + 5]
        b0, b1, b2, b3 = data[pos + 6 : pos + 10]
        tag_size = (b0 & 0x7F) << 21 | (b1 & 0x7F) << 14 | (b2 & 0x7F) << 7 | (b3 & 0x7F)
        pos += 10 + tag_size + (10 if flags & 0x10 else 0)
    return pos


def _strip_trailing_tags(data: mmap.mmap, start: int) -> int:
    """End of the audio frames: before ID3v1, APEv2 and Lyrics3v2 tags, in any order."""
    end = len(data)
    while True:
        if end - 128 >= start and data[end - 128 : end - 125] == b"TAG":
            end -= 128
        elif end - 32 >= start and data[end - 32 : end - 24] == b"APETAGEX":
            tag_size, _, flags = struct.unpack_from("<III", data, end - 20)
            if tag_size < 32:  # the size includes its own 32-byte footer
                return end
            end -= tag_size + (32 if flags & 0x80000000 else 0)
        elif end - 15 >= start and data[end - 9 : end] == b"LYRICS200":
            digits = bytes(data[end - 15 : end - 9])
            if not digits.isdigit():
                return end
            end -= int(digits) + 15
        else:
            return max(end, start)


def _xing_claim(data: mmap.mmap, pos: int, frame: _MpegFrame) -> tuple[bool, int | None, int]:
    """(is an info frame, frames claimed, gapless trim) from a Xing/Info tag in ``frame``."""
    tag_at = pos + frame.side_info_at
    if data[tag_at : tag_at + 4] not in (b"Xing", b"Info"):
        return False, None, 0
    frame_end = min(pos + frame.length, len(data))
    if tag_at + 8 > frame_end:
        return True, None, 0
    (flags,) = struct.unpack_from(">I", data, tag_at + 4)
    cursor = tag_at + 8
    claimed: int | None = None
    if flags & 1 and cursor + 4 <= frame_end:
        (claimed,) = struct.unpack_from(">I", data, cursor)
    cursor += (4 if flags & 1 else 0) + (4 if flags & 2 else 0)
    cursor += (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
    trim = 0
    if cursor + 24 <= frame_end and data[cursor : cursor + 4] in _LAME_ENCODERS:
        b0, b1, b2 = data[cursor + 21 : cursor + 24]
        trim = (b0 << 4 | b1 >> 4) + ((b1 & 0x0F) << 8 | b2)
    return True, claimed, trim


def _resync(
    data: mmap.mmap, pos: int, end: int, stream: tuple[int, int, int] | None
) -> _MpegFrame | None:
    """The next frame at or after ``pos`` that another frame of the same stream follows.

    Two headers in a row is how decoders tell a frame from an 0xFFE bit pattern in junk.
    Returns the frame with ``pos`` in ``offset``; None if there is none before ``end``.
    """
    candidate = data.find(b"\xff", pos, end)
    while candidate != -1:
        frame = _mpeg_frame(data, candidate)
        if frame is not None and (stream is None or frame.stream == stream):
            after = candidate + frame.length
            follower = _mpeg_frame(data, after)
            if after == end or (follower is not None and follower.stream == frame.stream):
                return dataclasses.replace(frame, offset=candidate)
        candidate = data.find(b"\xff", candidate + 1, end)
    return None


def _scan_mpeg(path: Path) -> _MpegScan:
    """Count the frames present by hopping from header to header, without decoding.

    Junk between frames (a stray tag, a damaged region) is skipped the way a decoder
    resynchronises; a last frame that runs past the end of the file means it was cut.
    """
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start = _skip_id3v2(data)
        end = _strip_trailing_tags(data, start)
        first = _resync(data, start, end, None)
        if first is None:
            return _MpegScan(None, 1152, None, 0, cut_mid_frame=False)
        is_info, claimed, trim = _xing_claim(data, first.offset, first)
        pos = first.offset + (first.length if is_info else 0)
        count = 0
        while pos < end:
            frame = _mpeg_frame(data, pos)
            if frame is None or frame.stream != first.stream:
                if end - pos < 4 and data[pos] == 0xFF:
                    return _MpegScan(count, first.samples, claimed, trim, cut_mid_frame=True)
                found = _resync(data, pos + 1, end, first.stream)
                if found is None:
                    break
                pos = found.offset
                continue
            if pos + frame.length > end:
                return _MpegScan(count, first.samples, claimed, trim, cut_mid_frame=True)
            count += 1
            pos += frame.length
        return _MpegScan(count, first.samples, claimed, trim, cut_mid_frame=False)


def _mpeg_frames(snd: sf.SoundFile, path: Path) -> int:
    scan = _scan_mpeg(path)
    rate = int(snd.samplerate)
    reported = int(snd.frames)
    per_frame = scan.samples_per_frame
    if scan.frames is None:
        # No frame our parser knows (free-format bitrate): count what the decoder plays.
        present = _decoded_frames(path)
        claimed = reported if scan.claimed_frames is not None else None
    else:
        present = max(scan.frames * per_frame - scan.trim, 0)
        claimed = None
        if scan.claimed_frames is not None:
            claimed = max(scan.claimed_frames * per_frame - scan.trim, 0)
    if scan.cut_mid_frame:
        raise AudioTruncated(
            f"the MP3 file is truncated: it ends inside a frame after {_seconds(present, rate)}"
        )
    if claimed is not None and present + per_frame < claimed:
        raise AudioTruncated(
            f"the MP3 file is truncated: its header claims {_seconds(claimed, rate)} "
            f"but the file holds {_seconds(present, rate)}"
        )
    # libsndfile is sample-exact for a whole stream; its estimate without a Xing header is not.
    if reported < _UNKNOWN_FRAMES and abs(reported - present) <= per_frame:
        return reported
    return present
