"""Log set-up shared by the API, the workers and the supervisor.

``ASYNCML_LOG_FORMAT=json`` writes one JSON object a line (for log shippers); ``text`` (the
default) is for people. Every line logged while a task runs carries its ``task_id`` and
``kind`` (a context variable set by the worker runtime, read by a filter), whichever
library logged it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

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


def configure_logging(settings: Settings, role: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_TaskFields())
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
                static_fields={"role": role},
            )
        )
    else:
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s")
        )
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
