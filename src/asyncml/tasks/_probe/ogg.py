"""Ogg: there is no length in a header, so the check is that the stream was not cut.

libsndfile takes the last granule position, i.e. the length of what is present. A cut shows
as an incomplete last page or a last page without the end-of-stream flag.
"""

from __future__ import annotations

import struct
from pathlib import Path

from asyncml.tasks._audio_errors import AudioTruncated

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


def check_ogg_tail(path: Path, size: int) -> None:
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
