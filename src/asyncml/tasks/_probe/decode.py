"""Counting frames by decoding: libsndfile in blocks, or librosa when libsndfile cannot open.

Both are slower than reading a header, so the entry point uses them only when the header
gives no length (blocks) or the file is in no format libsndfile knows (librosa, imported
lazily: it is heavy, and header probes must not pay for it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
from celery.exceptions import SoftTimeLimitExceeded

from asyncml.extras import import_extra
from asyncml.tasks._audio_errors import AudioError, AudioNotAudio
from asyncml.tasks._probe.info import NOT_AUDIO, AudioInfo, check_plausible

_DECODE_BLOCK_FRAMES = 65536
# A full decode holds every sample: a file larger than this could need gigabytes.
MAX_FULL_DECODE_BYTES = 50_000_000


class _ForwardOnlySoundFile(sf.SoundFile):  # type: ignore[misc]  # soundfile has no stubs
    """A SoundFile that never seeks: soundfile re-seeks after every read of a seekable file,
    and libsndfile fails that seek at the end of a FLAC stream whose length it does not know.
    """

    def seekable(self) -> bool:
        return False


def decoded_frames(path: Path) -> int:
    """Count frames by decoding in blocks: memory stays bounded whatever the length."""
    with _ForwardOnlySoundFile(path) as snd:
        block = np.empty((_DECODE_BLOCK_FRAMES, snd.channels), dtype=np.float32)
        total = 0
        while True:
            got = len(snd.read(out=block))
            if got == 0:
                return total
            total += got


def probe_by_decoding_with_librosa(path: Path, *, libsndfile_error: str) -> AudioInfo:
    """Last resort for files libsndfile cannot open: decode fully with librosa (audioread).

    librosa warns that audioread support is deprecated, and audioread imports deprecated
    stdlib modules; neither is the caller's concern, so warnings are silenced here. librosa
    is the ``decode`` extra: without it the task fails ``extra_missing``, naming it.
    """
    if path.stat().st_size > MAX_FULL_DECODE_BYTES:  # a full decode holds every sample
        raise AudioError(
            f"cannot read the file with libsndfile ({libsndfile_error}), and at "
            f"{path.stat().st_size} bytes it is too large to decode in full "
            f"(at most {MAX_FULL_DECODE_BYTES} bytes)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        librosa = import_extra(
            "librosa", "decode", f"this file ({libsndfile_error}) is in no format libsndfile "
            "reads; decoding it"
        )  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signal, rate = librosa.load(path, sr=None, mono=False)
    except SoftTimeLimitExceeded:
        raise  # the task's time is up: that is a timeout, not a verdict on the file
    except Exception as exc:  # any decoder failure means the same thing to the caller
        raise AudioNotAudio(f"{NOT_AUDIO}: {libsndfile_error}") from exc
    frames = int(signal.shape[-1])
    channels = 1 if signal.ndim == 1 else int(signal.shape[0])
    sample_rate = int(rate)
    if sample_rate <= 0 or frames == 0:
        raise AudioNotAudio(f"{NOT_AUDIO}: {libsndfile_error}")
    check_plausible("the decoded audio", sample_rate, channels)
    return AudioInfo(
        duration_s=frames / sample_rate,
        sample_rate=sample_rate,
        channels=channels,
        frames=frames,
        format="UNKNOWN",
    )
