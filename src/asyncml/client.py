"""The Python SDK: ``Client`` and ``AsyncClient`` on httpx.

Submit, wait on the server's long-poll (never a tight loop), cancel, follow a task's live
events (``events``, ``wait(on_event=...)``) and ``map`` many inputs with bounded
concurrency, yielding tasks as they finish. Errors come back as the
classes the server raised, mapped from the body's ``type``; a task that ended in FAILURE
raises ``TaskFailed`` from ``run`` and ``Task.output()``.

Only failures that queued nothing are retried: a connection that could not be opened, a
503 (the server promises nothing was queued) and a 429 (after its ``Retry-After``). Any
other 4xx is the caller's mistake and is raised at once.

Over 350 lines on purpose: ``Client`` and ``AsyncClient`` mirror each other method by
method, and kept side by side they stay alike (splitting them is the next step if either
grows).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse
from pydantic import BaseModel, PrivateAttr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from asyncml.errors import (
    AsyncmlError,
    RateLimited,
    ServiceUnavailable,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    error_class_for,
)
from asyncml.records import TaskEvent, TaskRecord

DEFAULT_URL = "http://127.0.0.1:8000"
LONG_POLL_S = 30.0  # the server's cap on ?wait=
MAP_BATCH = 100  # inputs ``map`` sends in one batch request
_MAX_RETRY_AFTER_S = 60.0

# Called with each event of a task ``wait(on_event=...)`` follows; an async client awaits
# what it returns, if anything.
OnEvent = Callable[[TaskEvent], Any]


class Task(TaskRecord):
    """A task as the server reports it, with the kind's typed output when it succeeded."""

    _client: Client | None = PrivateAttr(default=None)

    def wait(self, timeout: float | None = None, on_event: OnEvent | None = None) -> Task:
        """Wait on this task through the ``Client`` that returned it (``Client.wait``).

        A task an ``AsyncClient`` returned is waited on with ``await client.wait(task.id)``.
        """
        if self._client is None:
            raise AsyncmlError(
                f"task {self.id} was not returned by a Client: use client.wait(task.id)"
            )
        return self._client.wait(self.id, timeout=timeout, on_event=on_event)

    def output(self) -> BaseModel | Any:
        """The kind's output model (or raw JSON for a kind this install does not know).

        Raises ``TaskFailed`` if the task failed or was cancelled, ``TaskTimeout`` if it
        is not final yet.
        """
        if not self.final:
            raise TaskTimeout(f"task {self.id} is {self.status.value}, not final yet")
        if self.error is not None or self.status.value != "SUCCESS":
            message = self.error.message if self.error else f"task {self.id} was cancelled"
            error_type = self.error.type if self.error else "cancelled"
            raise TaskFailed(message, task=self, error_type=error_type)
        from asyncml.registry import default_registry

        registry = default_registry()
        if self.kind in registry:
            return registry.get(self.kind).output_model.model_validate(self.result)
        if self.kind.startswith("model."):  # served from a model folder: one shared shape
            from asyncml.models.kinds import PredictionOut

            return PredictionOut.model_validate(self.result)
        return self.result


def _error_class(type_: str) -> type[AsyncmlError]:
    """The class of an error ``type``. A kind's own errors live in its module: a type not
    known yet may be a built-in kind's, known once the kinds are imported (on first need)."""
    cls = error_class_for(type_)
    if cls is AsyncmlError and type_ != AsyncmlError.type:
        from asyncml.tasks import builtin_kinds

        builtin_kinds()
        cls = error_class_for(type_)
    return cls


def _error_from(response: httpx.Response) -> AsyncmlError:
    try:
        body = response.json()
        cls = _error_class(str(body.get("type", "")))
        message = str(body.get("message", response.text))
    except (ValueError, AttributeError):
        cls, message = AsyncmlError, f"HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code == 429:
        return RateLimited(message, retry_after_s=_retry_after(response))
    if response.status_code == 503 and cls is AsyncmlError:
        cls = ServiceUnavailable
    error = cls(message)
    return error


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(_MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        return None


def _transient(exc: BaseException) -> bool:
    """Retry only what queued nothing: unreachable, 503, or a 429 that says when to return."""
    if isinstance(exc, RateLimited):
        return exc.retry_after_s is not None
    return isinstance(exc, ServiceUnavailable)


def _wait_for(state: RetryCallState) -> float:
    """Exponential back-off with jitter, or the server's Retry-After when it gave one."""
    backoff = wait_exponential_jitter(multiplier=0.2, max=10, jitter=0.5)
    outcome = state.outcome
    if outcome is not None:
        exc = outcome.exception()
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            return exc.retry_after_s
    return backoff(state)


def _lost(method: str, kwargs: Mapping[str, Any], exc: Exception) -> AsyncmlError:
    """A connection lost mid-request is safe to retry only if repeating it changes nothing:
    a GET, or a POST that carries an idempotency key."""
    headers = kwargs.get("headers") or {}
    if method == "GET" or "idempotency-key" in headers:
        return ServiceUnavailable(f"connection lost: {exc!r}")
    return AsyncmlError(f"the request failed: {exc!r}")


def _idempotent() -> dict[str, str]:
    """One key per submit call, sent again on each retry: a retried submit whose first
    try did reach the server returns that task instead of queueing a second one."""
    return {"idempotency-key": f"asyncml-{uuid.uuid4()}"}


def _prefer_wait(wait_s: float) -> dict[str, str]:
    """Ask the server to hold the answer (at most the long-poll cap, which the client's
    read timeout allows for)."""
    return {"prefer": f"wait={max(0.0, min(wait_s, LONG_POLL_S)):g}"}


def _headers(api_key: str | None) -> dict[str, str]:
    from asyncml._version import __version__

    headers = {"user-agent": f"asyncml-client/{__version__}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _progress(total: int, show: bool | None, description: str) -> Any:
    """A rich progress bar on a terminal; nothing otherwise (or when told). Its description
    says how many of the tasks in flight are queued and how many running."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("done"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    progress.add_task(description, total=total)
    return progress


class _MapBoard:
    """What ``map``'s bar shows: of the tasks submitted, how many are queued, running and
    done. A task moves to running on its ``started`` event, so while the bar is shown each
    task in flight follows its event stream instead of long-polling."""

    def __init__(self, bar: Any, kind: str) -> None:
        self._bar = bar
        self._kind = kind
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self.done = 0

    @property
    def counts(self) -> tuple[int, int, int]:
        """(queued, running, done)."""
        with self._lock:
            return len(self._queued), len(self._running), self.done

    def submitted(self, tasks: Iterable[TaskRecord]) -> None:
        with self._lock:
            for task in tasks:
                (self._running if task.status.value == "STARTED" else self._queued).add(task.id)
        self._show()

    def on_event(self, event: TaskEvent) -> None:
        if event.type != "started":
            return
        with self._lock:
            if event.task_id in self._queued:
                self._queued.discard(event.task_id)
                self._running.add(event.task_id)
        self._show()

    def finished(self, task: TaskRecord) -> None:
        with self._lock:
            self._queued.discard(task.id)
            self._running.discard(task.id)
            self.done += 1
        self._show()

    def _show(self) -> None:
        queued, running, done = self.counts
        self._bar.update(
            self._bar.task_ids[0],
            completed=done,
            description=f"{self._kind}: {queued} queued, {running} running,",
        )


def _event_from(sse: ServerSentEvent) -> TaskEvent | None:
    """The ``TaskEvent`` an SSE message carries (its ``wire()`` JSON read back); None for a
    type this SDK does not know, so a newer server's events never break an older client."""
    data: dict[str, Any] = json.loads(sse.data)
    kind = sse.event or data.get("type")
    if kind not in {"queued", "started", "progress", "log", "output", "completed"}:
        return None
    head = {key: data.pop(key, None) for key in ("task_id", "id", "type", "at")}
    return TaskEvent(
        id=sse.id or str(head["id"] or ""),
        task_id=str(head["task_id"]),
        type=kind,
        at=head["at"],
        data=data,
    )


class _Follow:
    """Following one task's event stream across reconnections: where to resume, how often
    it failed in a row, and the deadline.

    A dropped connection, a 503 or a stream cut before ``completed`` is retried after a
    back-off, resuming after the last stored event seen (``Last-Event-ID``: nothing lost,
    nothing repeated), at most ``retries`` times in a row; any other error (a 404 is
    ``TaskNotFound``) is raised at once.
    """

    def __init__(
        self, task_id: str, retries: int, timeout: float | None, last_event_id: str | None
    ) -> None:
        self.task_id = task_id
        self.retries = retries
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last_id = last_event_id
        self.failures = 0

    @property
    def path(self) -> str:
        return f"/v1/tasks/{self.task_id}/events"

    def options(self, base: httpx.Timeout) -> dict[str, Any]:
        """The request's headers, and a read timeout that ends at the deadline (the server
        sends a keep-alive comment every 15 s, so a read never waits longer unless cut)."""
        headers = {} if self.last_id is None else {"Last-Event-ID": self.last_id}
        read = base.read
        if self.deadline is not None:
            remaining = max(0.01, self.deadline - time.monotonic())
            read = remaining if read is None else min(read, remaining)
        timeout = httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)
        return {"headers": headers, "timeout": timeout}

    def seen(self, sse: ServerSentEvent) -> TaskEvent | None:
        self._check_deadline()
        event = _event_from(sse)
        if event is not None and event.type != "queued":  # queued events are not stored
            self.last_id = event.id
        self.failures = 0
        return event

    def ended(self) -> AsyncmlError:
        return ServiceUnavailable(f"the event stream of task {self.task_id} ended early")

    def lost(self, exc: httpx.TransportError) -> AsyncmlError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ServiceUnavailable(f"cannot reach the service: {exc}")
        return ServiceUnavailable(f"the event stream of task {self.task_id} was cut: {exc!r}")

    def backoff(self, error: AsyncmlError) -> float:
        """Seconds to wait before reconnecting; raises ``error`` when it is not worth a
        retry (or the retries are spent), ``TaskTimeout`` once the deadline has passed."""
        self._check_deadline()
        if not _transient(error):
            raise error
        self.failures += 1
        if self.failures > self.retries:
            raise error
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            delay = error.retry_after_s
        else:
            delay = min(10.0, 0.2 * 2 ** (self.failures - 1)) + random.uniform(0, 0.5)  # noqa: S311  # jitter
        if self.deadline is not None:
            delay = min(delay, max(0.0, self.deadline - time.monotonic()))
        return delay

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TaskTimeout(f"task {self.task_id} not final after {self.timeout:g} s")


def _final(event: TaskEvent) -> dict[str, Any]:
    """The final record a ``completed`` event carries (None when the record expired)."""
    task: dict[str, Any] | None = event.data.get("task")
    if task is None:
        raise TaskNotFound(f"task {event.task_id} is no longer kept")
    return task


def _http_options(
    base_url: str, api_key: str | None, timeout_s: float, max_connections: int
) -> dict[str, Any]:
    """What both clients give httpx: reads may last a whole long-poll."""
    return {
        "base_url": base_url,
        "headers": _headers(api_key),
        "timeout": httpx.Timeout(timeout_s, read=LONG_POLL_S + timeout_s),
        "limits": httpx.Limits(max_connections=max_connections),
    }


class _Poll:
    """The steps of waiting on one task: long-polls of at most 30 s until a deadline."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def params(self) -> dict[str, float]:
        remaining = LONG_POLL_S if self.deadline is None else self.deadline - time.monotonic()
        return {"wait": max(0.0, min(LONG_POLL_S, remaining))}

    def done(self, task: Task) -> bool:
        """True when final; TaskTimeout once the deadline has passed without it."""
        if task.final:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TaskTimeout(f"task {self.task_id} not final after {self.timeout:g} s")
        return False


class Client:
    """Synchronous client; one pooled, keep-alive connection pool per instance.

    ``retries`` bounds how often a transient failure is retried per request.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 5,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self.retries = retries
        self.max_connections = max_connections
        self._http = httpx.Client(
            transport=transport, **_http_options(base_url, api_key, timeout_s, max_connections)
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _once(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServiceUnavailable(f"cannot reach the service: {exc}") from exc
        except httpx.TransportError as exc:
            raise _lost(method, kwargs, exc) from exc
        if response.is_success:
            return response.json()
        raise _error_from(response)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self.retries + 1),
            wait=_wait_for,
            reraise=True,
        )
        return retrying(self._once, method, path, **kwargs)

    def _task(self, data: Any) -> Task:
        """A task that can wait on itself (``Task.wait``) through this client."""
        task = Task.model_validate(data)
        task._client = self
        return task

    def kinds(self) -> list[dict[str, Any]]:
        kinds: list[dict[str, Any]] = self._request("GET", "/v1/kinds")
        return kinds

    def submit(self, kind: str, /, **inputs: Any) -> Task:
        """Queue one task; returns at once with its id and status QUEUED."""
        return self._task(
            self._request("POST", f"/v1/tasks/{kind}", json=inputs, headers=_idempotent())
        )

    def get(self, task_id: str) -> Task:
        return self._task(self._request("GET", f"/v1/tasks/{task_id}"))

    def predict(
        self, kind: str, /, *, wait_s: float = 10.0, timeout: float | None = None, **inputs: Any
    ) -> Task:
        """Submit and hold the request until the task is final (``Prefer: wait``): one round
        trip for a fast model; a task still running after ``wait_s`` is waited on as usual."""
        headers = _idempotent() | _prefer_wait(wait_s)
        task = self._task(self._request("POST", f"/v1/tasks/{kind}", json=inputs, headers=headers))
        return task if task.final else self.wait(task.id, timeout=timeout)

    def submit_batch(self, kind: str, inputs: Iterable[Mapping[str, Any]]) -> list[Task]:
        """Queue many inputs in one request (all or nothing); the tasks in input order."""
        body = {"inputs": [dict(i) for i in inputs]}
        answer = self._request("POST", f"/v1/tasks/{kind}/batch", json=body, headers=_idempotent())
        return [self._task(t) for t in answer["tasks"]]

    def wait(
        self, task_id: str, timeout: float | None = None, on_event: OnEvent | None = None
    ) -> Task:
        """Until the task is final; ``TaskTimeout`` if ``timeout`` passes first.

        Long-polls; with ``on_event``, follows the task's event stream instead and calls it
        with each event (queued, started, progress, log, output, completed) as it comes.
        """
        if on_event is not None:
            for event in self.events(task_id, timeout=timeout):
                on_event(event)
                if event.type == "completed":
                    return self._task(_final(event))
        poll = _Poll(task_id, timeout)
        while True:
            task = self._task(self._request("GET", f"/v1/tasks/{task_id}", params=poll.params()))
            if poll.done(task):
                return task

    def events(
        self, task_id: str, *, timeout: float | None = None, last_event_id: str | None = None
    ) -> Iterator[TaskEvent]:
        """The task's events as they happen, ending with ``completed`` (its ``data["task"]``
        is the final record). A dropped stream is resumed after the last event seen."""
        follow = _Follow(task_id, self.retries, timeout, last_event_id)
        while True:
            try:
                options = follow.options(self._http.timeout)
                with connect_sse(self._http, "GET", follow.path, **options) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        raise _error_from(source.response)
                    for sse in source.iter_sse():
                        event = follow.seen(sse)
                        if event is None:
                            continue
                        yield event
                        if event.type == "completed":
                            return
                raise follow.ended()
            except httpx.TransportError as exc:
                error = follow.lost(exc)
            except AsyncmlError as exc:
                error = exc
            time.sleep(follow.backoff(error))  # back-off before reconnecting

    def cancel(self, task_id: str) -> Task:
        return self._task(self._request("DELETE", f"/v1/tasks/{task_id}"))

    def run(self, kind: str, /, *, timeout: float | None = None, **inputs: Any) -> Any:
        """Submit, wait, and return the typed output; ``TaskFailed`` if it failed."""
        return self.wait(self.submit(kind, **inputs).id, timeout=timeout).output()

    def map(
        self,
        kind: str,
        inputs: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = 16,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> Generator[Task, None, None]:
        """Submit every input with at most ``concurrency`` in flight; yield final tasks
        in the order they finish. Failed tasks are yielded too (check ``task.error``); an
        input the server refuses (e.g. 422) raises. Stopping early submits nothing more."""
        items = [dict(i) for i in inputs]
        bar = _progress(len(items), progress, kind)
        board = None if bar is None else _MapBoard(bar, kind)
        # Each task in flight holds a pooled connection while it long-polls.
        width = max(1, min(concurrency, self.max_connections))

        context: AbstractContextManager[Any] = bar if bar is not None else nullcontext()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=width)
        pending = iter(items)

        def refill(free: int) -> set[concurrent.futures.Future[Task]]:
            """Fill the free slots with one batch request, and wait on each of its tasks."""
            chunk = list(itertools.islice(pending, min(free, MAP_BATCH)))
            if not chunk:
                return set()
            tasks = self.submit_batch(kind, chunk)
            if board is None:
                return {pool.submit(self.wait, task.id, timeout) for task in tasks}
            board.submitted(tasks)
            return {pool.submit(self.wait, task.id, timeout, board.on_event) for task in tasks}

        try:
            with context:
                running = refill(width)
                while running:
                    done, running = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    running |= refill(width - len(running))
                    for future in done:
                        task = future.result()
                        if board is not None:
                            board.finished(task)
                        yield task
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


class AsyncClient:
    """The same API for asyncio code; ``map`` is an async iterator."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self.retries = retries
        self.max_connections = max_connections
        self._http = httpx.AsyncClient(
            transport=transport, **_http_options(base_url, api_key, timeout_s, max_connections)
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _once(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServiceUnavailable(f"cannot reach the service: {exc}") from exc
        except httpx.TransportError as exc:
            raise _lost(method, kwargs, exc) from exc
        if response.is_success:
            return response.json()
        raise _error_from(response)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self.retries + 1),
            wait=_wait_for,
            reraise=True,
        )
        return await retrying(self._once, method, path, **kwargs)

    async def kinds(self) -> list[dict[str, Any]]:
        kinds: list[dict[str, Any]] = await self._request("GET", "/v1/kinds")
        return kinds

    async def submit(self, kind: str, /, **inputs: Any) -> Task:
        return Task.model_validate(
            await self._request("POST", f"/v1/tasks/{kind}", json=inputs, headers=_idempotent())
        )

    async def get(self, task_id: str) -> Task:
        return Task.model_validate(await self._request("GET", f"/v1/tasks/{task_id}"))

    async def predict(
        self, kind: str, /, *, wait_s: float = 10.0, timeout: float | None = None, **inputs: Any
    ) -> Task:
        """As ``Client.predict``: one round trip when the task is final within ``wait_s``."""
        headers = _idempotent() | _prefer_wait(wait_s)
        task = Task.model_validate(
            await self._request("POST", f"/v1/tasks/{kind}", json=inputs, headers=headers)
        )
        return task if task.final else await self.wait(task.id, timeout=timeout)

    async def submit_batch(self, kind: str, inputs: Iterable[Mapping[str, Any]]) -> list[Task]:
        body = {"inputs": [dict(i) for i in inputs]}
        answer = await self._request(
            "POST", f"/v1/tasks/{kind}/batch", json=body, headers=_idempotent()
        )
        return [Task.model_validate(t) for t in answer["tasks"]]

    async def wait(
        self, task_id: str, timeout: float | None = None, on_event: OnEvent | None = None
    ) -> Task:
        """As ``Client.wait``; ``on_event`` may be a coroutine function (it is awaited)."""
        if on_event is not None:
            async for event in self.events(task_id, timeout=timeout):
                answer = on_event(event)
                if inspect.isawaitable(answer):
                    await answer
                if event.type == "completed":
                    return Task.model_validate(_final(event))
        poll = _Poll(task_id, timeout)
        while True:
            task = Task.model_validate(
                await self._request("GET", f"/v1/tasks/{task_id}", params=poll.params())
            )
            if poll.done(task):
                return task

    async def events(
        self, task_id: str, *, timeout: float | None = None, last_event_id: str | None = None
    ) -> AsyncIterator[TaskEvent]:
        """As ``Client.events``: ``async for event in client.events(task_id)``."""
        follow = _Follow(task_id, self.retries, timeout, last_event_id)
        while True:
            try:
                options = follow.options(self._http.timeout)
                async with aconnect_sse(self._http, "GET", follow.path, **options) as source:
                    if source.response.status_code != 200:
                        await source.response.aread()
                        raise _error_from(source.response)
                    async for sse in source.aiter_sse():
                        event = follow.seen(sse)
                        if event is None:
                            continue
                        yield event
                        if event.type == "completed":
                            return
                raise follow.ended()
            except httpx.TransportError as exc:
                error = follow.lost(exc)
            except AsyncmlError as exc:
                error = exc
            await asyncio.sleep(follow.backoff(error))  # back-off before reconnecting

    async def cancel(self, task_id: str) -> Task:
        return Task.model_validate(await self._request("DELETE", f"/v1/tasks/{task_id}"))

    async def run(self, kind: str, /, *, timeout: float | None = None, **inputs: Any) -> Any:
        task = await self.submit(kind, **inputs)
        return (await self.wait(task.id, timeout=timeout)).output()

    async def map(
        self,
        kind: str,
        inputs: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = 16,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> AsyncIterator[Task]:
        items = [dict(i) for i in inputs]
        bar = _progress(len(items), progress, kind)
        board = None if bar is None else _MapBoard(bar, kind)
        width = max(1, min(concurrency, self.max_connections))
        pending = iter(items)

        async def refill(free: int) -> set[asyncio.Future[Task]]:
            """Fill the free slots with one batch request, and wait on each of its tasks."""
            chunk = list(itertools.islice(pending, min(free, MAP_BATCH)))
            if not chunk:
                return set()
            tasks = await self.submit_batch(kind, chunk)
            if board is None:
                return {asyncio.ensure_future(self.wait(t.id, timeout=timeout)) for t in tasks}
            board.submitted(tasks)
            return {
                asyncio.ensure_future(self.wait(t.id, timeout=timeout, on_event=board.on_event))
                for t in tasks
            }

        context: AbstractContextManager[Any] = bar if bar is not None else nullcontext()
        running: set[asyncio.Future[Task]] = set()
        with context:
            try:
                running = await refill(width)
                while running:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    running |= await refill(width - len(running))
                    for future in done:
                        task = future.result()
                        if board is not None:
                            board.finished(task)
                        yield task
            finally:
                for future in running:
                    future.cancel()
