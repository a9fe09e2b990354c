"""The built-in task kinds. Adding a kind: declare it in a module here and list it below."""

from typing import Any

from asyncml.kinds import TaskKind
from asyncml.tasks.audio import audio_length
from asyncml.tasks.euro import euro_results

BUILTIN_KINDS: list[TaskKind[Any, Any]] = [audio_length, euro_results]

__all__ = ["BUILTIN_KINDS"]
