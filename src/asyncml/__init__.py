"""asyncml: submit a job over HTTP, get an id at once, collect the result later."""

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

__version__ = "0.1.0"

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
