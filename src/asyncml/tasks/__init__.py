"""The built-in task kinds. Adding a kind: write its module here and add its line to ``_KINDS``.

The lines name the kinds (``module:attribute``) instead of importing them, so importing this
package imports no kind: ``settings.py`` imports the euro kind's settings group
(``tasks._euro_settings``), which imports this package first, and the kinds import
``settings``. A kind is imported when the registry first asks for the built-in kinds.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncml.kinds import TaskKind

_KINDS = [
    "asyncml.tasks.audio:audio_length",
    "asyncml.tasks.euro:euro_results",
]


def builtin_kinds() -> list[TaskKind[Any, Any]]:
    """Import the listed kinds; a line that names no kind fails here, naming the line."""
    from asyncml.kinds import TaskKind

    kinds: list[TaskKind[Any, Any]] = []
    for line in _KINDS:
        module, _, attribute = line.partition(":")
        kind = getattr(import_module(module), attribute, None)
        if not isinstance(kind, TaskKind):
            raise TypeError(f"asyncml.tasks: {line!r} names no TaskKind")
        kinds.append(kind)
    return kinds


def __getattr__(name: str) -> list[TaskKind[Any, Any]]:
    """``BUILTIN_KINDS``: the kinds, imported on first use (PEP 562), not with the package."""
    if name == "BUILTIN_KINDS":
        return builtin_kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BUILTIN_KINDS", "builtin_kinds"]
