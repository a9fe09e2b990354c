"""Errors of audio.length, in the one ``AsyncmlError`` tree (found by ``error_class_for``)::

AsyncmlError
└── AudioError            422  the bytes are not audio we can measure
    ├── AudioNotAudio     422  not an audio file at all
    └── AudioTruncated    422  the file ends before its header says it should

A module of their own, not ``audio.py``: the probes raise them and ``audio.py`` imports the
probes, so errors kept in ``audio.py`` would make the two import each other.
"""

from __future__ import annotations

from asyncml.errors import AsyncmlError


class AudioError(AsyncmlError):
    """The bytes are not audio whose length we can measure."""

    type = "audio_invalid"
    status_code = 422


class AudioNotAudio(AudioError):
    """The body is not an audio file in any format we can read."""

    type = "audio_not_audio"


class AudioTruncated(AudioError):
    """The file ends before its header says it should."""

    type = "audio_truncated"
