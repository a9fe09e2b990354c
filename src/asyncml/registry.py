"""Registry: name -> TaskKind. The API, the engine, the CLI and the client all read it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from asyncml.errors import UnknownKind
from asyncml.kinds import TaskKind

if TYPE_CHECKING:
    from asyncml.settings import Settings

AnyKind = TaskKind[Any, Any]


class Registry:
    """Holds declared kinds; refuses a second kind under a name already taken."""

    def __init__(self, kinds: Iterable[AnyKind] = ()) -> None:
        self._kinds: dict[str, AnyKind] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: AnyKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"task kind {kind.name!r} is already registered")
        classic_paths = {k.classic.path for k in self._kinds.values() if k.classic}
        if kind.classic and kind.classic.path in classic_paths:
            raise ValueError(f"classic route {kind.classic.path!r} is already taken")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> AnyKind:
        try:
            return self._kinds[name]
        except KeyError:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise UnknownKind(f"unknown task kind {name!r}; known kinds: {known}") from None

    def __iter__(self) -> Iterator[AnyKind]:
        return iter(self._kinds.values())

    def __len__(self) -> int:
        return len(self._kinds)

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    @property
    def queues(self) -> list[str]:
        return sorted({k.queue for k in self._kinds.values()})


def default_registry() -> Registry:
    """The built-in kinds, listed in ``asyncml.tasks``."""
    from asyncml.tasks import BUILTIN_KINDS

    return Registry(BUILTIN_KINDS)


def build_registry(settings: Settings) -> Registry:
    """The built-in kinds (with ``debug.echo`` if enabled) plus a ``model.<name>`` kind per
    servable model folder.

    Model folders come from ``ASYNCML_MODELS_DIR`` and, unless turned off, the bundled
    examples; a folder that cannot be served is logged and skipped.
    """
    from asyncml.models import model_kinds

    registry = default_registry()
    if settings.debug_kinds:
        from asyncml.tasks.debug import DEBUG_KINDS

        for kind in DEBUG_KINDS:
            registry.add(kind)
    for kind in model_kinds(settings):
        registry.add(kind)
    return registry
