"""Plainly-not-audio bodies, told from their first bytes and Content-Type before any decoder.

The decode fallback (librosa, then audioread and ffmpeg) takes seconds to import and start,
so a 20-byte error page or a JSON answer made ``audio.length`` slow to say "not audio". A
body is refused here only when it has none of the signatures of the containers a decoder
could read *and* something says it is not audio: it reads as text, it is too small to hold
any audio frame, or the server labelled it as a non-audio type. Anything else (unlabelled
binary without a signature we list, e.g. raw ADTS or AC-3) still gets the decoder's try.
"""

from __future__ import annotations

from pathlib import Path

from asyncml.tasks._audio_errors import AudioNotAudio
from asyncml.tasks._probe.info import NOT_AUDIO

SNIFF_BYTES = 1024
# Below this no container holds a header and one frame; the smallest MPEG frame is 72 bytes.
MIN_AUDIO_BYTES = 64
# Signatures at offset 0 of containers libsndfile or ffmpeg decode.
_MAGIC_AT_0 = (
    b"RIFF", b"RIFX", b"RF64", b"BW64", b"FORM", b"fLaC", b"OggS", b"ID3", b".snd", b"caff",
    b"wvpk", b"MAC ", b"#!AMR", b"TTA1", b"MPCK", b"MP+", b"FRM8", b"DSD ", b"\x1aE\xdf\xa3",
    b"0&\xb2u\x8ef\xcf\x11", b".ra\xfd", b".RMF", b"\x0bw", b"\x7f\xfe\x80\x01", b"2BIT",
    b"NIST_1A",
)  # fmt: skip
# Media types that say "not audio" outright; octet-stream and missing types say nothing.
_NOT_AUDIO_TYPES = ("text/", "image/", "application/json", "application/xml", "application/pdf")
_NOT_AUDIO_SUFFIXES = ("+json", "+xml")


def refuse_plainly_not_audio(path: Path, content_type: str | None = None) -> None:
    """Raise AudioNotAudio when the body at ``path`` is plainly not audio; else return."""
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    if _has_audio_signature(head):
        return
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type.startswith(_NOT_AUDIO_TYPES) or media_type.endswith(_NOT_AUDIO_SUFFIXES):
        raise AudioNotAudio(f"{NOT_AUDIO}: the server sent {media_type}")
    if _reads_as_text(head):
        raise AudioNotAudio(f"{NOT_AUDIO}: the body is text")
    if path.stat().st_size < MIN_AUDIO_BYTES:
        raise AudioNotAudio(f"{NOT_AUDIO}: {path.stat().st_size} bytes, too few to hold any audio")


def _has_audio_signature(head: bytes) -> bool:
    if head.startswith(_MAGIC_AT_0) or head[4:8] == b"ftyp":  # ftyp: MP4/M4A/3GP
        return True
    # An MPEG audio or ADTS frame sync: eleven set bits.
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


def _reads_as_text(head: bytes) -> bool:
    """UTF-8 (or ASCII) with no control bytes other than whitespace: a page, JSON, a note."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the sniff boundary
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(ch.isprintable() or ch in "\t\n\r\f" for ch in text)
