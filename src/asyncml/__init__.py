"""asyncml: submit a job over HTTP, get an id at once, collect the result later."""

from asyncml.client import Client
from asyncml.errors import (
    AsyncmlError,
    FetchBlocked,
    FetchError,
    InputInvalid,
    ServiceUnavailable,
    TaskConflict,
    TaskNotFound,
    TaskTimeout,
    UnknownKind,
)
from asyncml.kinds import Limits, TaskContext, TaskKind, task_kind
from asyncml.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AsyncmlError",
    "Client",
    "FetchBlocked",
    "FetchError",
    "InputInvalid",
    "Limits",
    "ServiceUnavailable",
    "Settings",
    "TaskConflict",
    "TaskContext",
    "TaskKind",
    "TaskNotFound",
    "TaskTimeout",
    "UnknownKind",
    "__version__",
    "task_kind",
]
