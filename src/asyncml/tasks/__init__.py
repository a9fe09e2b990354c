"""The built-in task kinds. Adding a kind: declare it in a module here and list it below."""

from asyncml.tasks.audio import audio_length

BUILTIN_KINDS = [audio_length]

__all__ = ["BUILTIN_KINDS"]
