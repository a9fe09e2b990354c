"""The one error tree of asyncml.

Every error is data: a stable ``type`` string, an HTTP status and a readable message.
The API renders ``{"type": ..., "message": ...}``, a failed task stores the same body,
and the client maps ``type`` back to the class::

    AsyncmlError
    ├── InputInvalid          422  the input does not fit the kind's schema or rules
    ├── UnsupportedMediaType  415  the body is not sent as JSON
    ├── Unauthorized          401  no API key, or one that is unknown or revoked
    ├── UnknownKind           404  no task kind by that name
    ├── TaskNotFound          404  no task with that id (or not yours)
    ├── TaskConflict          409  the task is in a state that forbids the request
    ├── ServiceUnavailable    503  the broker or the result store cannot be reached
    ├── RateLimited           429  too many requests; retry after a while
    ├── TaskFailed            (client side) the task ended in FAILURE; carries the task
    ├── TaskTimeout           504  the task ran past its time limit
    ├── ExtraMissing          501  the path needs an extra that is not installed
    └── FetchError            502  an outbound download failed
        ├── FetchBlocked      403  the URL points at an address we refuse to reach
        │                          (type ``blocked_destination``)
        └── FetchTooLarge     413  the body is larger than the configured cap

A task kind's own errors live with the kind (``tasks/_audio_errors.py``,
``tasks/_euro_errors.py``, ``models/errors.py``) and join this tree by subclassing
``AsyncmlError``: defining a class with its own ``type`` registers it with the mapping
``error_class_for`` reads, and a second class claiming a type already taken is refused at
import time, so two kinds cannot answer with the same ``type`` for different things.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

# Every error type and its class, filled as the classes are defined (see __init_subclass__).
_BY_TYPE: dict[str, type[AsyncmlError]] = {}


class AsyncmlError(Exception):
    """Base class: carries a stable type string and an HTTP status."""

    type: ClassVar[str] = "internal_error"
    status_code: ClassVar[int] = 500

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register the class under its ``type``; a type taken by another class is refused.

        A subclass that keeps its parent's ``type`` adds nothing to the mapping. The same
        class defined again (its module imported a second time) replaces its first copy.
        """
        super().__init_subclass__(**kwargs)
        if "type" not in cls.__dict__:
            return
        taken = _BY_TYPE.get(cls.type)
        if taken is not None and _name(taken) != _name(cls):
            raise TypeError(
                f"{_name(cls)}: error type {cls.type!r} is already {_name(taken)}'s; "
                "give the error a type of its own"
            )
        _BY_TYPE[cls.type] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_body(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message}

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with this error's response."""
        return {}


class InputInvalid(AsyncmlError):
    """The input does not fit the kind's schema or its rules."""

    type = "input_invalid"
    status_code = 422


class UnsupportedMediaType(AsyncmlError):
    """The request body is not JSON."""

    type = "unsupported_media_type"
    status_code = 415


class Unauthorized(AsyncmlError):
    """No API key, or one that is not valid; never says which."""

    type = "unauthorized"
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="asyncml"'}


class UnknownKind(AsyncmlError):
    """No task kind is declared under that name."""

    type = "unknown_kind"
    status_code = 404


class TaskNotFound(AsyncmlError):
    """No task with that id is known (or it has expired)."""

    type = "task_not_found"
    status_code = 404


class TaskConflict(AsyncmlError):
    """The task's state forbids the request, e.g. cancelling a finished task."""

    type = "task_conflict"
    status_code = 409


class ServiceUnavailable(AsyncmlError):
    """The broker or the result store cannot be reached, or a queue is full."""

    type = "service_unavailable"
    status_code = 503

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": f"{math.ceil(self.retry_after_s)}"}


class RateLimited(AsyncmlError):
    """Too many requests for now; ``retry_after_s`` says when to come back."""

    type = "rate_limited"
    status_code = 429

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.extra_headers = dict(extra_headers or {})

    def headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.retry_after_s is not None:
            headers["Retry-After"] = f"{max(1, math.ceil(self.retry_after_s))}"
        return headers


class TaskFailed(AsyncmlError):
    """Raised by the client when a task it waited for ended in FAILURE.

    ``error_type`` is the task's own error type (e.g. ``audio_not_audio``), the message
    its message; ``task`` is the whole final task.
    """

    type = "task_failed"
    status_code = 200

    def __init__(self, message: str, *, task: Any = None, error_type: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.error_type = error_type

    def __str__(self) -> str:
        """``fetch_failed: HTTP 404 from ...``: the type is what a program branches on, and a
        traceback showing only the message hid it."""
        return f"{self.error_type}: {self.message}" if self.error_type else self.message


class ExtraMissing(AsyncmlError):
    """The request needs an optional part of the install (an extra) that is not installed."""

    type = "extra_missing"
    status_code = 501


class TaskTimeout(AsyncmlError):
    """The task ran past its declared time limit."""

    type = "task_timeout"
    status_code = 504


class FetchError(AsyncmlError):
    """An outbound download failed: connection, status, timeout.

    ``upstream_status`` is the status the server answered, when it answered one: a caller
    tells a 416 (nothing in the range asked: an empty file) from a 404 by it.
    """

    type = "fetch_failed"
    status_code = 502
    upstream_status: int | None = None


class FetchBlocked(FetchError):
    """The URL resolves to an address we refuse to reach (SSRF guard)."""

    type = "blocked_destination"
    status_code = 403


class FetchTooLarge(FetchError):
    """The body is larger than the configured download cap."""

    type = "fetch_too_large"
    status_code = 413


def error_class_for(type_: str) -> type[AsyncmlError]:
    """Map a body's ``type`` back to its class; unknown types become the base class.

    A kind's types are known once its module is imported (the client imports the built-in
    kinds when it meets a type it does not know yet).
    """
    return _BY_TYPE.get(type_, AsyncmlError)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def describe_errors(errors: Iterable[Mapping[str, Any]], body: Any = None) -> str:
    """One readable line from pydantic/FastAPI error entries: ``field: what is wrong; ...``.

    The ``body`` prefix FastAPI adds to locations is dropped: the client knows it sent one.
    A JSON syntax error (FastAPI's ``json_invalid``, located by a character offset) is told
    by line and column when the request ``body`` is given: "31: JSON decode error" named
    neither the place nor the fault.
    """
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid" and isinstance(body, str | bytes):
            parts.append(describe_json_error(err, body))
            continue
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid input"


def describe_json_error(err: Mapping[str, Any], body: str | bytes) -> str:
    """``invalid JSON at line L, column C: what`` for FastAPI's ``json_invalid`` entry.

    Lines and columns count from 1, as editors and ``json.JSONDecodeError`` do; the offset
    is FastAPI's ``loc[-1]``, the reason ``ctx.error`` (the decoder's own words), except a
    comma before a closing bracket, the commonest slip, which is named as such.
    """
    doc = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    loc = err.get("loc", ())
    pos = loc[-1] if loc and isinstance(loc[-1], int) else 0
    pos = max(0, min(pos, len(doc)))
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    ctx = err.get("ctx") or {}
    reason = str(ctx.get("error") or err.get("msg") or "not JSON")
    if doc[pos : pos + 1] in ("}", "]") and doc[:pos].rstrip().endswith(","):
        reason = "trailing comma"
    elif reason:
        reason = reason[0].lower() + reason[1:]
    return f"invalid JSON at line {line}, column {column}: {reason}"
