"""Log set-up shared by the API, the workers and the supervisor.

``ASYNCML_LOG_FORMAT=json`` writes one JSON object a line (for log shippers); ``text`` (the
default) is for people. Every line logged while a task runs carries its ``task_id`` and
``kind`` (a context variable set by the worker runtime, read by a filter), whichever
library logged it.

One handler on the root logger formats every line of a process: libraries' loggers
(uvicorn, Celery, Kombu) propagate to it, Python's warnings are logged (not printed), and
the worker keeps Celery from installing handlers of its own (``engine/worker.py``). A line
that must be written where logging cannot be used (a signal handler) is formatted by the
same formatter with ``format_line``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from asyncml.settings import Settings

_task: ContextVar[tuple[str, str] | None] = ContextVar("asyncml_task", default=None)


@contextmanager
def task_context(task_id: str, kind: str) -> Iterator[None]:
    token = _task.set((task_id, kind))
    try:
        yield
    finally:
        _task.reset(token)


class _TaskFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = _task.get()
        if current is not None and not hasattr(record, "task_id"):
            record.task_id, record.kind = current
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        task_id = getattr(record, "task_id", None)
        kind = getattr(record, "kind", "")
        return f"{line} [task {kind} {task_id}]" if task_id else line


# uvicorn's copy of its message with terminal colour codes: noise in a JSON line.
_NOT_FIELDS = ("color_message",)


def configure_logging(settings: Settings, role: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_TaskFields())
    formatter: logging.Formatter
    if settings.log_format == "json":
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            static_fields={"role": role},
            reserved_attrs=[*RESERVED_ATTRS, *_NOT_FIELDS],
        )
    else:
        formatter = _TextFormatter(f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    logging.captureWarnings(True)  # a warning is a log line, not raw text on stderr


def format_line(logger: str, level: int, message: str) -> str:
    """``message`` as the root handler would write it, without calling a handler: nothing
    here takes logging's locks, so a signal handler may use it. Before ``configure_logging``
    (no handler yet), logging's default format."""
    record = logging.LogRecord(logger, level, __file__, 0, message, None, None)
    handlers = logging.getLogger().handlers
    formatter = handlers[0].formatter if handlers else None
    return (formatter or logging.Formatter(logging.BASIC_FORMAT)).format(record)
