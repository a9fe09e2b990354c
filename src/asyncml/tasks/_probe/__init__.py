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

The rate is a claim too (the length is frames / rate): a sample rate outside 1 kHz to
768 kHz, or more than 64 channels, is ``AudioNotAudio``; a WAV whose frames (block align) are
smaller than one sample per channel claims more audio than its bytes hold, ``AudioTruncated``.

When the header gives no length, the frames are counted by decoding with libsndfile in
blocks. Only when libsndfile cannot open the file at all does librosa (imported lazily: it is
heavy) get a try at a full decode. Errors from either library never escape: they become an
``AudioError`` subclass with a readable message.

Modules, one per container family: ``riff`` (WAV/WAVEX/RF64), ``ogg``, ``mpeg``, ``decode``
(block counting and the librosa fallback), ``info`` (``AudioInfo``, the header limits, shared
checks) and ``entry`` (``probe_audio``, which dispatches to them).
"""

from asyncml.tasks._probe.entry import probe_audio
from asyncml.tasks._probe.info import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioInfo
from asyncml.tasks._probe.riff import probe_wav_head

__all__ = [
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "AudioInfo",
    "probe_audio",
    "probe_wav_head",
]
