"""asyncml: submit a job over HTTP, get an id at once, collect the result later."""

from asyncml._version import __version__
from asyncml.client import AsyncClient, Client, Task
from asyncml.errors import (
    AsyncmlError,
    FetchBlocked,
    FetchError,
    InputInvalid,
    RateLimited,
    ServiceUnavailable,
    TaskConflict,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    UnknownKind,
)
from asyncml.kinds import Limits, TaskContext, TaskKind, task_kind
from asyncml.settings import Settings

__all__ = [
    "AsyncClient",
    "AsyncmlError",
    "Client",
    "FetchBlocked",
    "FetchError",
    "InputInvalid",
    "Limits",
    "RateLimited",
    "ServiceUnavailable",
    "Settings",
    "Task",
    "TaskConflict",
    "TaskContext",
    "TaskFailed",
    "TaskKind",
    "TaskNotFound",
    "TaskTimeout",
    "UnknownKind",
    "__version__",
    "task_kind",
]
