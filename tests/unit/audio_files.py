"""Audio files for probe tests, generated with numpy + soundfile so no fixtures are checked in."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf

# Layer III bitrates (kbps) by MPEG-1 / MPEG-2(.5); libsndfile's LAME writes Layer III only.
_L3_BITRATES = {
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {
    0b11: (44100, 48000, 32000),
    0b10: (22050, 24000, 16000),
    0b00: (11025, 12000, 8000),
}


def tone(seconds: float, sample_rate: int, channels: int = 1) -> np.ndarray:
    """A quiet 440 Hz sine (with a fifth above on the second channel): easy on lossy codecs."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    voices = [np.sin(2 * np.pi * 440.0 * (1.5**ch) * t) for ch in range(channels)]
    return (0.3 * np.stack(voices, axis=1)).astype(np.float32)


def write_audio(
    path: Path,
    *,
    seconds: float = 30.0,
    sample_rate: int = 16000,
    channels: int = 1,
    format: str = "WAV",
    subtype: str | None = None,
) -> Path:
    sf.write(
        path, tone(seconds, sample_rate, channels), sample_rate, format=format, subtype=subtype
    )
    return path


def cut(path: Path, dest: Path, *, keep: int) -> Path:
    """Copy the first ``keep`` bytes of ``path`` to ``dest``: a download that stopped early."""
    dest.write_bytes(path.read_bytes()[:keep])
    return dest


def cut_in_half(path: Path, dest: Path) -> Path:
    return cut(path, dest, keep=path.stat().st_size // 2)


def patch_wav_sizes(path: Path, *, data_bytes: int, riff_bytes: int | None = None) -> None:
    """Overwrite the RIFF and data chunk sizes of a canonical 44-byte-header WAV."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"RIFF" and raw[36:40] == b"data", "expects soundfile's canonical WAV"
    struct.pack_into("<I", raw, 40, data_bytes)
    if riff_bytes is not None:
        struct.pack_into("<I", raw, 4, riff_bytes)
    path.write_bytes(bytes(raw))


def mp3_frame_offsets(data: bytes) -> list[int]:
    """Start of every MPEG Layer III frame in an untagged MP3 as libsndfile writes it."""
    offsets: list[int] = []
    pos = 0
    while pos + 4 <= len(data):
        (word,) = struct.unpack_from(">I", data, pos)
        assert word >> 21 == 0x7FF and (word >> 17) & 3 == 1, f"no Layer III frame at {pos}"
        version = (word >> 19) & 3
        mpeg1 = version == 0b11
        bitrate = _L3_BITRATES[mpeg1][(word >> 12) & 0xF] * 1000
        rate = _SAMPLE_RATES[version][(word >> 10) & 3]
        length = (144 if mpeg1 else 72) * bitrate // rate + ((word >> 9) & 1)
        offsets.append(pos)
        pos += length
    return offsets


def clear_flac_total_samples(path: Path) -> None:
    """Zero STREAMINFO's total-samples field, as a streaming FLAC encoder leaves it."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"fLaC" and raw[4] & 0x7F == 0, "expects STREAMINFO first"
    field_at = 8 + 10  # STREAMINFO body starts at 8; the 36-bit total ends 8 bytes after +10
    packed = int.from_bytes(raw[field_at : field_at + 8], "big") & ~((1 << 36) - 1)
    raw[field_at : field_at + 8] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(raw))


def pcm_wav_bytes(
    *, sample_rate: int, frames: int, channels: int = 1, bits: int = 16, block_align: int = 0
) -> bytes:
    """A canonical PCM WAV of silence, built field by field so a test can make its header lie.

    ``block_align`` 0 means the honest value (channels x bytes per sample); the data chunk
    always holds ``frames`` honest frames.
    """
    honest = channels * ((bits + 7) // 8)
    align = block_align or honest
    data = bytes(frames * honest)
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body
