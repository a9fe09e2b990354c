"""What Redis's persistence settings mean for an accepted task (``StoreDurability``).

Only the append-only file decides: with ``appendonly no`` Redis keeps its data in RDB
snapshots, and a crash loses every write since the last one. ``appendfsync`` then decides
what a crash of the *machine* may lose: Redis writes the file before it answers, so a
killed Redis loses nothing whatever ``appendfsync`` says (but for writes a busy disk made
it postpone, at most 2 s of them, with ``everysec``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncml.store.durability import StoreDurability
from asyncml.store.redis.codec import decode

PARAMETERS = ("appendonly", "appendfsync")

_FIX = (
    "turn on Redis's append-only file: run CONFIG SET appendonly yes and CONFIG REWRITE "
    "(or set appendonly yes in redis.conf and restart Redis); or accept the risk with "
    "ASYNCML_STORE_DURABILITY=warn"
)
_FSYNC_RISK = {
    "always": "nothing: every write is on disk before Redis answers.",
    "everysec": "nothing if Redis crashes; up to about a second of accepted tasks "
    "if the machine does (power cut, kernel crash).",
    "no": "nothing if Redis crashes; up to about 30 s of accepted tasks if the machine "
    "does (the kernel decides when the file reaches the disk).",
}


def report(config: Mapping[Any, Any]) -> StoreDurability:
    """From the replies of ``CONFIG GET`` for each of ``PARAMETERS``, merged."""
    settings = {decode(name): decode(value) for name, value in config.items()}
    appendonly = settings.get("appendonly")
    if appendonly is None:  # a server that answers CONFIG GET but hides these
        return undisclosed(settings)
    if appendonly != "yes":
        return StoreDurability(
            store="redis",
            durable=False,
            settings=settings,
            risk="Redis runs without its append-only file (appendonly no): if it stops "
            "uncleanly, every task accepted since its last snapshot is lost and its id "
            "becomes unknown.",
            fix=_FIX,
        )
    fsync = settings.get("appendfsync", "")
    risk = _FSYNC_RISK.get(fsync, f"unknown appendfsync {fsync!r}.")
    return StoreDurability(store="redis", durable=True, settings=settings, risk=risk)


def undisclosed(settings: Mapping[str, str] | None = None) -> StoreDurability:
    """A Redis that refuses ``CONFIG`` (managed services rename or forbid it)."""
    return StoreDurability(
        store="redis",
        durable=None,
        settings=dict(settings or {}),
        risk="Redis would not show its persistence settings (CONFIG GET refused, as "
        "managed services do): whether accepted tasks survive a crash is unknown.",
        fix="make sure the provider keeps an append-only file (AOF) for this Redis; "
        "ASYNCML_STORE_DURABILITY=off silences this",
    )
