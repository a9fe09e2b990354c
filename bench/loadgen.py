"""The load generator: closed-loop clients that submit a task and long-poll until it is final.

Closed loop on purpose: each of `concurrency` clients submits one task, waits for its final
record through `GET /v1/tasks/{id}?wait=30`, then submits the next. The backlog never grows
past `concurrency`, so latency measures the service and not a queue the generator built,
and a run is bounded by `count` tasks and by `deadline_s` of wall-clock time, whichever
comes first. A consequence: in steady state submits per second equal tasks per second, so
the submit figure worth reading is the submit request's own latency.

Every time is `time.perf_counter()` in this process; "seen" is when the generator had the
final record in hand, which is what a client experiences.

The HTTP client is aiohttp: the generator shares the machine's cores with the service it
measures, and here aiohttp's C parser costs ~0.25 ms of CPU per submit + poll against
~1.9 ms for httpx (16 clients on the bare FastAPI app of ceiling_app.py: httpx held the
generator to ~530 tasks/s, aiohttp ~3,700). Every system is driven through it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

FINAL = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})
LONG_POLL_S = 30
# What a request can fail with short of an HTTP answer: refused, reset, timed out.
HTTP_ERRORS = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, its body read in full."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """One simulated user's HTTP client: at most `connections` keep-alive connections to
    `base_url` (loopback), each request's body read before it returns."""

    def __init__(self, base_url: str, *, connections: int = 1, timeout_s: float) -> None:
        _loopback_only(base_url)
        self._session = aiohttp.ClientSession(
            base_url,
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            skip_auto_headers=("User-Agent",),
        )

    async def post(
        self,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        async with self._session.post(path, json=json, data=content, headers=headers) as r:
            return Reply(r.status, await r.read())

    async def get(self, path: str, params: dict[str, str | int] | None = None) -> Reply:
        async with self._session.get(path, params=params) as r:
            return Reply(r.status, await r.read())

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._session.close()


@dataclass
class Sample:
    """One task's life as the client saw it."""

    submit_start: float
    submit_end: float
    seen: float | None = None
    status: str | None = None
    # From the final record's timestamps (server clocks, same machine), in milliseconds.
    queue_wait_ms: float | None = None
    run_ms: float | None = None
    after_finish_ms: float | None = None
    # `batch_size` of a model task's result: rows in the model call that produced it.
    batch_size: int | None = None


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    started: float = 0.0
    ended: float = 0.0
    stopped_by: str = "count"
    # Several generator processes (run_in_processes): their CPU, and how many there were.
    child_cpu_s: float = 0.0
    processes: int = 1

    def summary(self) -> dict[str, Any]:
        """The figures issue #7 asks for; times in milliseconds, rates per second."""
        done = [s for s in self.samples if s.seen is not None and s.status == "SUCCESS"]
        latencies = [(s.seen - s.submit_start) * 1000 for s in done if s.seen is not None]
        submit_ms = [(s.submit_end - s.submit_start) * 1000 for s in self.samples]
        first_submit = min((s.submit_start for s in self.samples), default=0.0)
        last_seen = max((s.seen for s in done if s.seen is not None), default=first_submit)
        last_submit = max((s.submit_end for s in self.samples), default=first_submit)
        span = last_seen - first_submit
        submit_span = last_submit - first_submit
        sizes = [s.batch_size for s in done if s.batch_size is not None]
        extra: dict[str, Any] = {}
        if sizes:
            counts = Counter(sizes)
            extra["batch_size"] = {
                "mean": round(sum(sizes) / len(sizes), 1),
                **percentiles(sizes),
                "tasks_by_size": {str(k): counts[k] for k in sorted(counts)},
            }
        return {
            **extra,
            "submitted": len(self.samples),
            "succeeded": len(done),
            "wall_s": round(self.ended - self.started, 3),
            "stopped_by": self.stopped_by,
            "tasks_per_s": round(len(done) / span, 1) if span > 0 else None,
            "submits_per_s": (
                round(len(self.samples) / submit_span, 1) if submit_span > 0 else None
            ),
            "requests": self.requests,
            "latency_ms": percentiles(latencies),
            "submit_ms": percentiles(submit_ms),
            "errors": dict(sorted(self.errors.items())),
            "breakdown_ms": {
                "queue_wait": percentiles(
                    [s.queue_wait_ms for s in done if s.queue_wait_ms is not None]
                ),
                "run": percentiles([s.run_ms for s in done if s.run_ms is not None]),
                "after_finish": percentiles(
                    [s.after_finish_ms for s in done if s.after_finish_ms is not None]
                ),
            },
        }


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max by nearest rank: no interpolation between two real observations."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 2)

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": round(ordered[-1], 2)}


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _seen(sample: Sample, record: dict[str, Any], result: LoadResult) -> None:
    """The client has seen the task final: its times, its status, and its error if any."""
    sample.seen = time.perf_counter()
    _breakdown(sample, record, seen_wall=time.time())
    sample.status = record["status"]
    if record["status"] != "SUCCESS":
        error = record.get("error") or {}
        result.errors[f"task:{record['status']}:{error.get('type', '?')}"] += 1


def _breakdown(sample: Sample, record: dict[str, Any], *, seen_wall: float) -> None:
    """Split the latency with the record's own times: queued, running, and until seen.

    "after_finish" is how long the client took to learn of the result: long-poll
    back-off, the response's way back, and for bursts the wait for its turn to be polled.
    """
    submitted = _timestamp(record.get("submitted_at"))
    started = _timestamp(record.get("started_at"))
    finished = _timestamp(record.get("finished_at"))
    if submitted is not None and started is not None:
        sample.queue_wait_ms = (started - submitted) * 1000
    if started is not None and finished is not None:
        sample.run_ms = (finished - started) * 1000
    if finished is not None:
        sample.after_finish_ms = (seen_wall - finished) * 1000
    result = record.get("result")
    if isinstance(result, dict) and isinstance(result.get("batch_size"), int):
        sample.batch_size = result["batch_size"]


def _error_kind(response: Reply) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}"
    kind = body.get("type") if isinstance(body, dict) else None
    return f"http_{response.status_code}:{kind}" if kind else f"http_{response.status_code}"


def _loopback_only(base_url: str) -> None:
    if not base_url.startswith(("http://127.", "http://localhost")):
        raise ValueError(f"the load generator talks to loopback only, not {base_url}")


def _prefer(wait_s: int) -> dict[str, str]:
    """`Prefer: wait=N` on submit when N > 0: the answer waits up to N s for the result."""
    return {"Prefer": f"wait={wait_s}"} if wait_s else {}


async def _poll_until_final(
    client: Client, record: Any, drained: float, result: LoadResult
) -> Any | None:
    """Long-poll one task until it is final, until `drained` at most; the final record, or
    None with the reason counted in `result.errors`. Transport errors are the caller's."""
    while record.get("status") not in FINAL:
        remaining = drained - time.perf_counter()
        if remaining <= 0:
            result.errors["unfinished"] += 1
            return None
        wait = max(1, min(LONG_POLL_S, math.floor(remaining)))
        try:
            response = await client.get(f"/v1/tasks/{record['id']}", params={"wait": wait})
        finally:
            result.requests += 1
        if response.status_code != 200:
            result.errors[f"poll:{_error_kind(response)}"] += 1
            return None
        record = response.json()
    return record


async def run_load(
    base_url: str,
    kind: str,
    make_input: Callable[[int], dict[str, Any]],
    *,
    count: int,
    concurrency: int,
    deadline_s: float,
    prefer_wait_s: int = 0,
    drain_s: float = 10.0,
    burst: bool = False,
) -> LoadResult:
    """Submit up to `count` tasks of `kind` from `concurrency` clients, for at most `deadline_s`.

    The deadline stops submitting; tasks in flight then have `drain_s` more to finish, and
    those still unfinished are counted as `unfinished` errors. `prefer_wait_s` > 0 sends
    `Prefer: wait=N` on submit, saving the first poll when the task finishes in time.

    `burst=True` is the open variant: submit everything first (the API's intake rate, with
    the queue growing behind it), then long-poll every task; latency then includes the
    backlog, and a result is "seen" only when its turn to be polled comes.
    """
    _loopback_only(base_url)
    result = LoadResult()
    next_index = 0
    deadline = drained = math.inf  # set once every client exists: making one takes ms
    headers = _prefer(prefer_wait_s)

    async def one_task(client: Client, index: int) -> None:
        sample = Sample(submit_start=time.perf_counter(), submit_end=0.0)
        result.samples.append(sample)
        try:
            response = await client.post(
                f"/v1/tasks/{kind}", json=make_input(index), headers=headers
            )
        except HTTP_ERRORS as exc:
            sample.submit_end = time.perf_counter()
            result.errors[f"submit:{type(exc).__name__}"] += 1
            return
        finally:
            result.requests += 1
        sample.submit_end = time.perf_counter()
        if response.status_code not in (200, 202):
            result.errors[f"submit:{_error_kind(response)}"] += 1
            return
        record = response.json()
        if burst:
            submitted.append((sample, record))
            return
        await wait_final(client, sample, record)

    async def wait_final(client: Client, sample: Sample, record: Any) -> None:
        try:
            final = await _poll_until_final(client, record, drained, result)
        except HTTP_ERRORS as exc:
            result.errors[f"poll:{type(exc).__name__}"] += 1
            return
        if final is not None:
            _seen(sample, final, result)

    async def client_loop(client: Client) -> None:
        nonlocal next_index
        while next_index < count:
            if time.perf_counter() >= deadline:
                result.stopped_by = "deadline"
                return
            index = next_index
            next_index += 1
            await one_task(client, index)

    async def drain_loop(client: Client) -> None:
        while submitted:
            sample, record = submitted.pop(0)
            await wait_final(client, sample, record)

    submitted: list[tuple[Sample, Any]] = []
    # One client, one keep-alive connection each, as independent users have.
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(base_url, timeout_s=LONG_POLL_S + 10.0))
            for _ in range(concurrency)
        ]
        result.started = time.perf_counter()
        deadline = result.started + deadline_s
        drained = deadline + drain_s
        await asyncio.gather(*(client_loop(client) for client in clients))
        if burst:
            drained = max(drained, time.perf_counter() + drain_s)
            await asyncio.gather(*(drain_loop(client) for client in clients))
        result.ended = time.perf_counter()
    return result


async def run_open_loop(
    base_url: str,
    kind: str,
    make_input: Callable[[int], dict[str, Any]],
    *,
    rate_per_s: float,
    duration_s: float,
    prefer_wait_s: int = 0,
    drain_s: float = 10.0,
    max_in_flight: int = 256,
) -> LoadResult:
    """Open loop: start one task every 1/`rate_per_s` s (even spacing) for `duration_s`.

    Arrivals do not wait for earlier tasks (unlike `run_load`), so latency is measured at a
    fixed offered load, as a service sees independent clients. Each task is submitted, then
    long-polled until final (or `Prefer: wait=N` on submit). Arrivals while `max_in_flight`
    tasks are open are dropped and counted as `dropped:max_in_flight` (a bounded generator).
    """
    _loopback_only(base_url)
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive")
    result = LoadResult(stopped_by="duration")
    headers = _prefer(prefer_wait_s)
    interval = 1.0 / rate_per_s
    total = max(1, int(duration_s * rate_per_s))
    in_flight = 0

    async def one_task(client: Client, index: int, drained: float) -> None:
        nonlocal in_flight
        in_flight += 1
        sample = Sample(submit_start=time.perf_counter(), submit_end=0.0)
        result.samples.append(sample)
        try:
            response = await client.post(
                f"/v1/tasks/{kind}", json=make_input(index), headers=headers
            )
            sample.submit_end = time.perf_counter()
            result.requests += 1
            if response.status_code not in (200, 202):
                result.errors[f"submit:{_error_kind(response)}"] += 1
                return
            final = await _poll_until_final(client, response.json(), drained, result)
            if final is not None:
                _seen(sample, final, result)
        except HTTP_ERRORS as exc:
            sample.submit_end = sample.submit_end or time.perf_counter()
            result.errors[f"http:{type(exc).__name__}"] += 1
        finally:
            in_flight -= 1

    async with Client(base_url, connections=max_in_flight, timeout_s=LONG_POLL_S + 10.0) as client:
        result.started = time.perf_counter()
        drained = result.started + duration_s + drain_s
        tasks: list[asyncio.Task[None]] = []
        for index in range(total):
            due = result.started + index * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                result.errors["dropped:max_in_flight"] += 1
                continue
            tasks.append(asyncio.create_task(one_task(client, index, drained)))
        await asyncio.gather(*tasks)
        result.ended = time.perf_counter()
    return result


# --- Routes: the same loads through other systems (the peers scenario) --------------------

BENTO_FINAL = {"completed": "SUCCESS", "failed": "FAILURE", "canceled": "CANCELLED"}
BENTO_POLL_S = 0.005  # BentoML's task API has no long-poll: its status is polled every 5 ms
# Celery's states, as Ray Serve's asynchronous inference reports them; polled like BentoML's.
RAY_FINAL = {"SUCCESS": "SUCCESS", "FAILURE": "FAILURE", "REVOKED": "CANCELLED"}


@dataclass(frozen=True)
class Route:
    """How one task goes through a system, so one generator drives every system alike.

    `asyncml`: `POST /v1/tasks/{path}` then long-poll (or `Prefer: wait`); `bentoml`: a
    `@bentoml.task`'s `POST /{path}/submit`, `GET /{path}/status` every 5 ms until final,
    then `GET /{path}/get`; `ray-async`: Ray Serve's asynchronous inference,
    `POST /{path}/submit` then `GET /status/{task_id}` every 5 ms until final (the result
    comes with the status); `sync`: one `POST {path}` answered with the result (Ray Serve's
    HTTP deployments).
    """

    style: str
    path: str
    prefer_wait_s: int = 0

    def __post_init__(self) -> None:
        if self.style not in ("asyncml", "bentoml", "ray-async", "sync"):
            raise ValueError(f"unknown route style {self.style!r}")


async def _route_task(
    client: Client,
    route: Route,
    body: dict[str, Any],
    sample: Sample,
    result: LoadResult,
    drained: float,
) -> None:
    """One task through `route`, from submit to its result in hand; errors counted."""
    try:
        if route.style == "sync":
            response = await client.post(route.path, json=body)
            result.requests += 1
            sample.submit_end = time.perf_counter()
            if response.status_code != 200:
                result.errors[f"submit:{_error_kind(response)}"] += 1
                return
            _seen(sample, {"status": "SUCCESS", "result": response.json()}, result)
            return
        if route.style == "asyncml":
            response = await client.post(
                f"/v1/tasks/{route.path}", json=body, headers=_prefer(route.prefer_wait_s)
            )
            result.requests += 1
            sample.submit_end = time.perf_counter()
            if response.status_code not in (200, 202):
                result.errors[f"submit:{_error_kind(response)}"] += 1
                return
            final = await _poll_until_final(client, response.json(), drained, result)
            if final is not None:
                _seen(sample, final, result)
            return
        response = await client.post(f"/{route.path}/submit", json=body)
        result.requests += 1
        sample.submit_end = time.perf_counter()
        if response.status_code != 200:
            result.errors[f"submit:{_error_kind(response)}"] += 1
            return
        task_id = response.json()["task_id"]
        if route.style == "ray-async":
            await _poll_ray_task(client, task_id, sample, result, drained)
            return
        status = "in_progress"
        while status not in BENTO_FINAL:
            if time.perf_counter() >= drained:
                result.errors["unfinished"] += 1
                return
            await asyncio.sleep(BENTO_POLL_S)  # the peer offers nothing to wait on
            response = await client.get(f"/{route.path}/status", params={"task_id": task_id})
            result.requests += 1
            if response.status_code != 200:
                result.errors[f"poll:{_error_kind(response)}"] += 1
                return
            status = response.json()["status"]
        response = await client.get(f"/{route.path}/get", params={"task_id": task_id})
        result.requests += 1
        final_status = BENTO_FINAL[status]
        if final_status == "SUCCESS" and response.status_code != 200:
            result.errors[f"get:{_error_kind(response)}"] += 1
            return
        _seen(sample, {"status": final_status, "error": {"type": "peer"}}, result)
    except HTTP_ERRORS as exc:
        sample.submit_end = sample.submit_end or time.perf_counter()
        result.errors[f"http:{type(exc).__name__}"] += 1


async def _poll_ray_task(
    client: Client, task_id: str, sample: Sample, result: LoadResult, drained: float
) -> None:
    """Ray Serve's asynchronous inference: its status every 5 ms; the result comes with it."""
    while True:
        if time.perf_counter() >= drained:
            result.errors["unfinished"] += 1
            return
        await asyncio.sleep(BENTO_POLL_S)  # the peer offers nothing to wait on
        response = await client.get(f"/status/{task_id}")
        result.requests += 1
        if response.status_code != 200:
            result.errors[f"poll:{_error_kind(response)}"] += 1
            return
        status = response.json()["status"]
        if status in RAY_FINAL:
            _seen(sample, {"status": RAY_FINAL[status], "error": {"type": "peer"}}, result)
            return


async def run_route_load(
    base_url: str,
    route: Route,
    make_input: Callable[[int], dict[str, Any]],
    *,
    count: int,
    concurrency: int,
    deadline_s: float,
    drain_s: float = 10.0,
    first_index: int = 0,
) -> LoadResult:
    """`run_load`'s closed loop through any `route`: one client and connection per user."""
    _loopback_only(base_url)
    result = LoadResult()
    next_index = 0
    deadline = drained = math.inf  # set once every client exists: making one takes ms

    async def client_loop(client: Client) -> None:
        nonlocal next_index
        while next_index < count:
            if time.perf_counter() >= deadline:
                result.stopped_by = "deadline"
                return
            index = next_index
            next_index += 1
            sample = Sample(submit_start=time.perf_counter(), submit_end=0.0)
            result.samples.append(sample)
            await _route_task(
                client, route, make_input(first_index + index), sample, result, drained
            )

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(base_url, timeout_s=LONG_POLL_S + 10.0))
            for _ in range(concurrency)
        ]
        result.started = time.perf_counter()
        deadline = result.started + deadline_s
        drained = deadline + drain_s
        await asyncio.gather(*(client_loop(client) for client in clients))
        result.ended = time.perf_counter()
    return result


async def run_route_open(
    base_url: str,
    route: Route,
    make_input: Callable[[int], dict[str, Any]],
    *,
    rate_per_s: float,
    duration_s: float,
    drain_s: float = 10.0,
    max_in_flight: int = 256,
) -> LoadResult:
    """`run_open_loop` through any `route`: one arrival every 1/rate s, whatever is open."""
    _loopback_only(base_url)
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive")
    result = LoadResult(stopped_by="duration")
    interval = 1.0 / rate_per_s
    in_flight = 0

    async def one(client: Client, index: int, drained: float) -> None:
        nonlocal in_flight
        in_flight += 1
        sample = Sample(submit_start=time.perf_counter(), submit_end=0.0)
        result.samples.append(sample)
        try:
            await _route_task(client, route, make_input(index), sample, result, drained)
        finally:
            in_flight -= 1

    async with Client(base_url, connections=max_in_flight, timeout_s=LONG_POLL_S + 10.0) as client:
        result.started = time.perf_counter()
        drained = result.started + duration_s + drain_s
        tasks: list[asyncio.Task[None]] = []
        for index in range(max(1, int(duration_s * rate_per_s))):
            delay = result.started + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the arrival schedule itself, not a wait on work
            if in_flight >= max_in_flight:
                result.errors["dropped:max_in_flight"] += 1
                continue
            tasks.append(asyncio.create_task(one(client, index, drained)))
        await asyncio.gather(*tasks)
        result.ended = time.perf_counter()
    return result


# --- Several generator processes -----------------------------------------------------------


def _child_load(conn: Any, load: Callable[[int, int], LoadResult], share: int, first: int) -> None:
    """A generator process: run its share, send back its samples and its own CPU."""
    began = os.times()
    try:
        result = load(share, first)
        now = os.times()
        conn.send(
            {
                "samples": [tuple(vars(s).values()) for s in result.samples],
                "errors": dict(result.errors),
                "requests": result.requests,
                "started": result.started,
                "ended": result.ended,
                "stopped_by": result.stopped_by,
                "cpu_s": (now.user - began.user) + (now.system - began.system),
            }
        )
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def run_in_processes(
    load: Callable[[int, int], LoadResult], clients: int, processes: int
) -> LoadResult:
    """Split `clients` over `processes` forked generator processes and merge their results.

    One asyncio process tops out near one core; past that the figure is the generator's.
    `load(share, first_index)` runs one process's share. Every time is `perf_counter`
    (CLOCK_MONOTONIC, one clock for every process of the machine), so samples merge as they
    are. The children's CPU is in `child_cpu_s`, to be added to the parent's own.
    """
    if processes <= 1:
        return load(clients, 0)
    context = multiprocessing.get_context("fork")
    shares = [
        clients // processes + (1 if i < clients % processes else 0) for i in range(processes)
    ]
    pipes, children = [], []
    for i, share in enumerate(s for s in shares if s):
        parent_end, child_end = context.Pipe(duplex=False)
        child = context.Process(
            target=_child_load, args=(child_end, load, share, i * 1_000_000), daemon=True
        )
        child.start()
        child_end.close()
        pipes.append(parent_end)
        children.append(child)
    merged = LoadResult(started=math.inf, ended=0.0)
    stopped = set()
    for pipe, child in zip(pipes, children, strict=True):
        part = pipe.recv()  # blocks until the child's share is done: its deadline bounds it
        child.join()
        if "error" in part:
            raise RuntimeError(f"load generator process failed: {part['error']}")
        merged.samples += [Sample(*values) for values in part["samples"]]
        merged.errors.update(part["errors"])
        merged.requests += part["requests"]
        merged.started = min(merged.started, part["started"])
        merged.ended = max(merged.ended, part["ended"])
        merged.child_cpu_s += part["cpu_s"]
        stopped.add(part["stopped_by"])
    merged.stopped_by = "deadline" if "deadline" in stopped else "count"
    merged.processes = len(children)
    return merged
