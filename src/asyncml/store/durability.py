"""Whether the task store keeps an accepted task across a crash of its server.

An id is answered once the record is written, so the store's persistence is the promise:
a Redis without its append-only file (``appendonly no``, snapshots only) forgets every
task accepted since its last snapshot when it is killed, and those ids become unknown
and never run. Nothing in Redis's replies tells a client that, so the service reads the
server's settings and, as ``ASYNCML_STORE_DURABILITY`` decides, refuses to be ready
(``check``), says so loudly (``warn``), or does not look (``off``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from asyncml.errors import ServiceUnavailable

if TYPE_CHECKING:  # base.py imports this module for the protocols' return type
    from asyncml.store.base import AsyncTaskStore, TaskStore

# The values of Settings.store_durability.
DurabilityMode = Literal["check", "warn", "off"]


class StoreDurability(BaseModel):
    """What the store's server says about its persistence, and what that risks."""

    store: Literal["redis", "sqlite"]
    durable: bool | None
    """True: an accepted task survives a crash of the store's server; None: the server
    would not say (a managed Redis that refuses ``CONFIG``)."""
    settings: dict[str, str]
    """The persistence settings as read, e.g. ``{"appendonly": "no", ...}``."""
    risk: str
    """What a crash may lose with these settings, in a sentence."""
    fix: str | None = None
    """What to change, when not known to be durable."""


def refuses_readiness(report: StoreDurability, mode: DurabilityMode) -> bool:
    """Only a store known not to be durable, and only under ``check``: a server that will
    not say (``durable`` None) is usually a managed one whose provider keeps the data."""
    return mode == "check" and report.durable is False


def log_durability(report: StoreDurability, mode: DurabilityMode, log: logging.Logger) -> None:
    """The start-up line: an error when ``check`` will keep the process unready, a warning
    when the store is not known to be durable, nothing otherwise."""
    if mode == "off" or report.durable is True:
        return
    text = f"task store durability: {report.risk} Fix: {report.fix}"
    if refuses_readiness(report, mode):
        log.error("%s (/readyz answers 503 until it is fixed)", text)
    else:
        log.warning(text)


def _unreadable(exc: ServiceUnavailable, log: logging.Logger) -> None:
    # /readyz reports the store itself as down; a start-up must not fail on it.
    log.warning("task store durability not checked at start: %s", exc.message)


def check_at_start(store: TaskStore, mode: DurabilityMode, log: logging.Logger) -> None:
    """Read the store's persistence once and log what ``mode`` asks for."""
    if mode == "off":
        return
    try:
        report = store.durability()
    except ServiceUnavailable as exc:
        _unreadable(exc, log)
        return
    log_durability(report, mode, log)


async def check_at_start_async(
    store: AsyncTaskStore, mode: DurabilityMode, log: logging.Logger
) -> None:
    """``check_at_start`` for the API's async store."""
    if mode == "off":
        return
    try:
        report = await store.durability()
    except ServiceUnavailable as exc:
        _unreadable(exc, log)
        return
    log_durability(report, mode, log)
