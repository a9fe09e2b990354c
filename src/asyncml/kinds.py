"""Declaring a task kind: one decorator gives the route, the Celery task, the schema and CLI;
and what a running task may use (``TaskContext``: settings, store, fetcher, a scratch folder).

Shaped after arq's ``func()`` and dramatiq's ``actor``: the declaration carries per-kind limits
and refuses bad names early, at import time, not when the first request arrives.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from asyncml.fetch import FetchBudget, Fetcher
    from asyncml.settings import Settings
    from asyncml.store import TaskStore

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)

_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Limits:
    """Per-kind limits.

    ``timeout_s`` is a soft limit; the hard kill follows ``grace_s`` later. ``max_attempts``
    bounds how often a task is started at all: a message comes back after its worker died,
    and a task that kills its worker every time (a poison task) must end, not loop.
    """

    timeout_s: float = 60.0
    grace_s: float = 10.0
    max_attempts: int = 3


@dataclass(frozen=True)
class Classic:
    """A legacy route kept for existing clients: its path and how to shape its result.

    ``result`` turns the kind's output into what ``GET /task/{id}`` returned before v1.
    """

    path: str
    result: Callable[[dict[str, Any]], Any] = lambda out: out


# Scratch folders are named for the worker process that made them, so the folders of a
# process that was killed mid-task can be told apart and removed.
SCRATCH_PREFIX = "asyncml-scratch-"


class Reporter(Protocol):
    """Where a running task's progress, logs and partial output go (engine/progress.py)."""

    def progress(self, done: float, total: float | None, message: str | None) -> None: ...

    def log(self, message: str, level: str) -> None: ...

    def output(self, partial: Any) -> None: ...


@dataclass
class TaskContext:
    """What a running task may use.

    The worker builds one per process and gives each task a copy (``dataclasses.replace``
    with the task's id): the id and the scratch folder are then the task's own, even in a
    process that runs several tasks at once (the threads of model queues).
    """

    settings: Settings
    store: TaskStore | None = None  # the task store: cache and shared schedules
    task_id: str = ""
    scratch_root: Path | None = None  # where scratch folders go; None: the system's temp dir
    reporter: Reporter | None = field(default=None, repr=False)  # the task's events
    _fetcher: Fetcher | None = field(default=None, repr=False)
    _scratch: Path | None = field(default=None, init=False, repr=False)
    _fetch_budget: FetchBudget | None = field(default=None, init=False, repr=False)

    @property
    def fetcher(self) -> Fetcher:
        """The guarded fetcher; all of this task's requests share one download deadline.

        The budget is not copied with the context, so each task's copy starts its own.
        """
        if self._fetcher is None:
            from asyncml.fetch import Fetcher

            self._fetcher = Fetcher.from_settings(self.settings)
        if self._fetch_budget is None:
            from asyncml.fetch import FetchBudget

            self._fetch_budget = FetchBudget(self._fetcher.total_timeout_s)
        return replace(self._fetcher, budget=self._fetch_budget)

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far the task is (``done`` of ``total``); watchers see the latest
        step within a fraction of a second. Cheap: buffered, never waits on a client."""
        if self.reporter is not None:
            self.reporter.progress(done, total, message)

    def log(self, message: str, level: str = "info") -> None:
        """A line for the task's watchers (its ``log`` events); secrets are scrubbed.
        Standard ``logging`` records at INFO and above reach them too."""
        if self.reporter is not None:
            self.reporter.log(message, level)

    def output(self, partial: Any) -> None:
        """A partial result (JSON data) for the task's watchers, before the final one."""
        if self.reporter is not None:
            self.reporter.output(partial)

    def scratch_dir(self) -> Path:
        """A folder of the running task's own, made on first use, for files too big to hold
        in memory (a download). ``TaskKind.run`` removes it when the task ends, however it ends;
        a folder left by a killed process is removed when the next worker process starts."""
        if self._scratch is None:
            root = self.scratch_root or Path(tempfile.gettempdir())
            self._scratch = Path(
                tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=root)
            )
        return self._scratch

    def remove_scratch(self) -> None:
        """Delete the task's scratch folder, if it made one (``TaskKind.run`` calls it)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def remove_orphaned_scratch(root: Path | None = None) -> int:
    """Delete scratch folders whose worker process is gone; how many were removed."""
    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid_text = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        return True
    return True


@dataclass(frozen=True)
class TaskKind(Generic[In, Out]):
    """One declared kind of task. Everything else (route, Celery task, CLI) derives from it."""

    name: str
    queue: str
    input_model: type[In]
    output_model: type[Out]
    func: Callable[[In, TaskContext], Out]
    limits: Limits = Limits()
    classic: Classic | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not _KIND_NAME.match(self.name):
            raise ValueError(
                f"task kind name {self.name!r} must be dotted lowercase, e.g. 'audio.length'"
            )
        if not _QUEUE_NAME.match(self.queue):
            raise ValueError(f"queue name {self.queue!r} must be lowercase letters, digits, -_")

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    def run(self, payload: Mapping[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Parse the Celery payload at the boundary, run, and dump the output as JSON data.

        The task's scratch folder is removed when the run ends, however it ends: the worker
        runtime and a test calling a kind directly both run it through here.
        """
        try:
            inp = self.input_model.model_validate(payload)
            out = self.func(inp, ctx)
            return self.output_model.model_validate(out).model_dump(mode="json")
        finally:
            ctx.remove_scratch()


def task_kind(
    name: str,
    *,
    queue: str,
    limits: Limits | None = None,
    classic: Classic | None = None,
) -> Callable[[Callable[[In, TaskContext], Out]], TaskKind[In, Out]]:
    """Declare a kind from a function annotated ``(inp: InModel, ctx: TaskContext) -> OutModel``.

    The models are read from the annotations so they are written exactly once.
    """

    def declare(func: Callable[[In, TaskContext], Out]) -> TaskKind[In, Out]:
        import typing

        hints = typing.get_type_hints(func)
        params = [h for k, h in hints.items() if k != "return"]
        if not params or "return" not in hints:
            raise TypeError(f"{func.__qualname__} must annotate its input model and return model")
        input_model, output_model = params[0], hints["return"]
        for model in (input_model, output_model):
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise TypeError(f"{func.__qualname__}: {model!r} is not a pydantic model")
        return TaskKind(
            name=name,
            queue=queue,
            input_model=input_model,
            output_model=output_model,
            func=func,
            limits=limits or Limits(),
            classic=classic,
            description=(func.__doc__ or "").strip().split("\n\n")[0],
        )

    return declare
