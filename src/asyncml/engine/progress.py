"""What a running task reports (progress, logs, partial output), on its way to the store.

A task never waits on its watchers: ``TaskReporter`` only appends to a buffer in memory;
one flusher thread per worker process writes the buffers to the store every
``FLUSH_S`` (progress coalesced: the latest step wins within a flush), and hands the events
a callback asked for to ``engine/notices.py``, throttled to one per ``WEBHOOK_EVERY_S`` per
task (the latest wins; one still held back when the task ends is dropped, since
``completed``, never throttled, carries the final state).
The runtime closes a reporter before it stores the outcome, so a task's events all come
before its ``completed``.

The standard ``logging`` records a task emits while it runs (INFO and above) become its
``log`` events too, with secrets scrubbed.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from asyncml.records import INTERMEDIATE_EVENTS, EventType, TaskEvent, utcnow
from asyncml.store import TaskStore

log = logging.getLogger(__name__)

FLUSH_S = 0.05
WEBHOOK_EVERY_S = 0.5
MAX_PENDING = 1000  # events a task may have waiting for a flush; past it the oldest go
_LEVELS = {"debug", "info", "warning", "error", "critical"}
_SECRETS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@"  # userinfo in a URL
    r"|(?P<token>(?:aml|whsec)_[A-Za-z0-9+/=_-]{8,})",  # our API keys and webhook secrets
    re.IGNORECASE,
)

# Queue one intermediate webhook: task id, event.
SendEvent = Callable[[str, TaskEvent], None]


def scrub(message: str) -> str:
    """A message with the secrets it may quote (URL passwords, keys) replaced."""

    def hide(match: re.Match[str]) -> str:
        return f"{match['scheme']}***@" if match["scheme"] else "***"

    return _SECRETS.sub(hide, message)


class TaskReporter:
    """One task's buffer of events; its methods are what ``TaskContext`` offers tasks."""

    def __init__(self, task_id: str, webhook_events: Collection[str] = ()) -> None:
        self.task_id = task_id
        self.webhook_events = frozenset(webhook_events) & INTERMEDIATE_EVENTS
        self._lock = threading.Lock()
        self._pending: list[TaskEvent] = []
        self._dropped = 0
        self._webhook_due: TaskEvent | None = None
        self._webhook_sent_at = -float("inf")
        self.closed = False
        self.flushing = threading.Lock()  # one flush at a time keeps the events in order

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        self._put("progress", {"done": done, "total": total, "message": message}, coalesce=True)

    def log(self, message: str, level: str = "info") -> None:
        level = level.lower() if level.lower() in _LEVELS else "info"
        self._put("log", {"level": level, "message": scrub(str(message))})

    def output(self, partial: Any) -> None:
        self._put("output", {"partial": partial})

    def _put(self, kind: EventType, data: dict[str, Any], *, coalesce: bool = False) -> None:
        event = TaskEvent(task_id=self.task_id, type=kind, at=utcnow(), data=data)
        with self._lock:
            if self.closed:
                return
            if coalesce and self._pending and self._pending[-1].type == kind:
                self._pending[-1] = event  # the latest step wins within a flush
            else:
                self._pending.append(event)
            if len(self._pending) > MAX_PENDING:
                del self._pending[0]
                self._dropped += 1

    def take(self) -> list[TaskEvent]:
        with self._lock:
            taken, self._pending = self._pending, []
            if self._dropped:
                note = f"{self._dropped} events dropped: reported faster than they could be kept"
                taken.insert(
                    0,
                    TaskEvent(
                        task_id=self.task_id,
                        type="log",
                        at=utcnow(),
                        data={"level": "warning", "message": note},
                    ),
                )
                self._dropped = 0
            return taken

    def webhook_to_send(self, flushed: list[TaskEvent]) -> TaskEvent | None:
        """The latest event a callback asked for, if the throttle lets one go now. At the
        task's end one still held back is dropped: ``completed`` carries the final state."""
        for event in flushed:
            if event.type in self.webhook_events and event.id:
                self._webhook_due = event
        now = time.monotonic()
        due = self._webhook_due
        if due is None or now - self._webhook_sent_at < WEBHOOK_EVERY_S:
            return None
        self._webhook_due, self._webhook_sent_at = None, now
        return due


_current: contextvars.ContextVar[TaskReporter | None] = contextvars.ContextVar(
    "asyncml_task_reporter", default=None
)


class _TaskLogs(logging.Handler):
    """Copies the log records of the task running in this thread into its events."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        reporter = _current.get()
        if reporter is None or record.name.startswith(__name__):
            return
        try:
            reporter.log(record.getMessage(), record.levelname.lower())
        except Exception:  # a log line must never break the task that wrote it
            self.handleError(record)


class EventFlusher:
    """One per worker process: writes every open reporter's events, every ``FLUSH_S``."""

    def __init__(self, store: Callable[[], TaskStore], send_event: SendEvent | None) -> None:
        self._store = store
        self._send_event = send_event
        self._reporters: dict[str, TaskReporter] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._handler = _TaskLogs()

    @contextmanager
    def reporting(
        self, task_id: str, webhook_events: Collection[str] = ()
    ) -> Iterator[TaskReporter]:
        """The task's reporter while it runs; flushed (synchronously) when it ends."""
        reporter = TaskReporter(task_id, webhook_events)
        self._ensure_thread()
        with self._lock:
            self._reporters[task_id] = reporter
        token = _current.set(reporter)
        try:
            yield reporter
        finally:
            _current.reset(token)
            with self._lock:
                self._reporters.pop(task_id, None)
                reporter.closed = True
            self._flush(reporter)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        self._pid = os.getpid()  # a forked child starts its own thread
        root = logging.getLogger()
        if self._handler not in root.handlers:
            root.addHandler(self._handler)
        self._thread = threading.Thread(target=self._run, name="asyncml-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_S)
            with self._lock:
                reporters = list(self._reporters.values())
            for reporter in reporters:
                self._flush(reporter)

    def _flush(self, reporter: TaskReporter) -> None:
        with reporter.flushing:
            self._write(reporter)

    def _write(self, reporter: TaskReporter) -> None:
        events = reporter.take()
        try:
            if events:
                ids = self._store().add_events(reporter.task_id, events)
                for event, given in zip(events, ids, strict=False):
                    event.id = given
        except Exception as exc:  # the store is away: progress is lost, never the task
            log.warning("events of task %s not stored: %r", reporter.task_id, exc)
        due = reporter.webhook_to_send(events)
        if due is not None and self._send_event is not None:
            try:
                self._send_event(reporter.task_id, due)
            except Exception as exc:
                log.warning("the %s webhook of task %s not queued: %r", due.type, due.task_id, exc)
