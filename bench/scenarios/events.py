"""Task events (issue #15) on each engine: how late progress reaches a watcher, what idle
streams cost the API, and how close the queue ETA is.

1. **Progress delay**: `debug.steps {steps: 10, step_s: 0.005}` (10 progress steps, a log line
   and a partial output each, ~50 ms a task) in a closed loop of `--clients` clients, each
   submitting a task, then reading its stream until `completed`. Delay = when the client has
   the `progress` event minus its `at` (stamped by `ctx.progress` in the worker; one clock).
   1,000 tasks, or fewer when `--seconds` ends submitting first (`scaled_down` says so).
2. **Idle streams**: 1,000 streams held open on one API process. `started`: on 2 STARTED
   tasks (500 streams each), made silent by freezing (SIGSTOP) the pool processes running
   them: `debug.steps` sleeps at most 5 s a step, less than connecting and measuring take.
   `queued`: then on 1,000 QUEUED tasks, behind those 2 (still frozen); these streams read
   their task's queue standing every 0.5 s, as the server does for a watcher of a queued
   task. The API's RSS with the streams open minus before, and its CPU per second
   over a window with every stream open.
3. **ETA**: 500 tasks of the same ~50 ms kind submitted at once on the 2 slots; `eta_s` read
   by `GET /v1/tasks/{id}` right after each submit, against the time until the task really
   started (`started_at`) and, since `eta_s` counts the task's own run, until it finished.

Streams come from one client address, so the bench lifts the API's per-client connection
cap (`ASYNCML_API_MAX_CONNECTIONS_PER_CLIENT=0`) and raises the global one to 2,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from loadgen import percentiles
from procstats import own_cpu_s
from rich.table import Table
from stack import Stack, started

from .context import Context
from .measure import target

ENGINES = ("rabbitmq+redis", "embedded")
STEPS = {"steps": 10, "step_s": 0.005}  # ~50 ms a task: 10 steps, 3 events each
PROGRESS_TASKS = 1000
DELAY_P95_LIMIT_MS = {"rabbitmq+redis": 250.0, "embedded": 500.0}
IDLE_STREAMS = 1000
IDLE_WINDOW_S = 10.0
IDLE_RSS_LIMIT_MB = 50.0
IDLE_CPU_LIMIT = 0.05  # of one core
IDLE_CONNECTING = 50  # streams being opened at once
ETA_TASKS = 500
ETA_ERROR_LIMIT = 0.25
FULL_SECONDS = 15.0  # --seconds from which the ETA backlog is the 500 tasks
# One client address holds every stream: the per-client cap (100) would refuse the 101st.
EVENTS_ENV = {
    "ASYNCML_API_MAX_CONNECTIONS": "2000",
    "ASYNCML_API_MAX_CONNECTIONS_PER_CLIENT": "0",
    # The idle streams' cost is per API process: one, on both engines (the embedded
    # default runs two, and the RSS would then be of two and uvicorn's parent).
    "ASYNCML_API_PROCESSES": "1",
}
FINAL = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})


def run(ctx: Context) -> dict[str, Any]:
    _raise_fd_limit(4 * IDLE_STREAMS)  # before the stack starts: its processes inherit it
    runs: list[dict[str, Any]] = []
    for engine in ENGINES:
        with started(ctx.stack(engine, EVENTS_ENV)) as stack:
            _warm(stack)
            runs.append(_progress_delay(ctx, stack))
            runs.append(_eta(ctx, stack))
            runs.extend(_idle(stack))
    return {"runs": runs, "custom_table": "events", "service_env": EVENTS_ENV}


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _client(base_url: str, connections: int = 1) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    # No read timeout: an idle stream is silent for up to the server's 15 s keep-alive.
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(30, read=None))


def _at(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


async def _submit(client: httpx.AsyncClient, payload: dict[str, Any]) -> str:
    answer = await client.post("/v1/tasks/debug.steps", json=payload)
    if answer.status_code != 202:
        raise RuntimeError(f"submit of debug.steps: {answer.status_code} {answer.text}")
    task_id: str = answer.json()["id"]
    return task_id


async def _final(client: httpx.AsyncClient, task_id: str, deadline: float) -> dict[str, Any]:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"task {task_id} not final by the scenario's deadline")
        answer = await client.get(f"/v1/tasks/{task_id}", params={"wait": min(30, remaining)})
        record: dict[str, Any] = answer.json()
        if record.get("status") in FINAL:
            return record


def _warm(stack: Stack) -> None:
    """Imports, connections, and the run times the ETA needs (it is null under 3 runs)."""

    async def go() -> None:
        async with _client(stack.base_url, 8) as client:
            ids = [await _submit(client, STEPS) for _ in range(10)]
            deadline = time.monotonic() + 60
            for record in await asyncio.gather(*(_final(client, i, deadline) for i in ids)):
                if record["status"] != "SUCCESS":
                    raise RuntimeError(f"warm-up of debug.steps on {stack.engine}: {record}")

    asyncio.run(go())


# 1. Progress delay ---------------------------------------------------------------------


@dataclass
class _Watched:
    delays_ms: list[float] = field(default_factory=list)
    tasks: int = 0
    succeeded: int = 0
    short: int = 0  # tasks whose stream showed fewer than 10 progress events
    errors: Counter[str] = field(default_factory=Counter)
    stopped_by: str = "count"


async def _watch_progress(
    base_url: str, count: int, clients: int, seconds: float, drain_s: float = 30.0
) -> _Watched:
    out = _Watched()
    stop_submitting = time.monotonic() + seconds
    next_index = 0

    async def one(client: httpx.AsyncClient) -> None:
        task_id = await _submit(client, STEPS)
        out.tasks += 1
        progress = 0
        async with asyncio.timeout(seconds + drain_s):
            async with aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events") as source:
                async for sse in source.aiter_sse():
                    seen = time.time()
                    if sse.event == "progress":
                        progress += 1
                        out.delays_ms.append((seen - _at(json.loads(sse.data)["at"])) * 1000)
                    elif sse.event == "completed":
                        status = json.loads(sse.data)["task"]["status"]
                        out.succeeded += status == "SUCCESS"
                        if status != "SUCCESS":
                            out.errors[f"task:{status}"] += 1
                        break
        if progress < STEPS["steps"]:
            out.short += 1

    async def loop() -> None:
        nonlocal next_index
        async with _client(base_url) as client:
            while next_index < count:
                if time.monotonic() >= stop_submitting:
                    out.stopped_by = "deadline"
                    return
                next_index += 1
                try:
                    await one(client)
                except (httpx.HTTPError, RuntimeError, TimeoutError) as exc:
                    out.errors[type(exc).__name__] += 1

    await asyncio.gather(*(loop() for _ in range(clients)))
    return out


def _progress_delay(ctx: Context, stack: Stack) -> dict[str, Any]:
    meter = stack.meter()
    cpu_before = own_cpu_s()
    began = time.monotonic()
    meter.start()
    watched = asyncio.run(
        _watch_progress(stack.base_url, PROGRESS_TASKS, ctx.bounds.clients, ctx.bounds.seconds)
    )
    processes = meter.stop()
    wall_s = time.monotonic() - began
    stack.check()
    scaled = watched.tasks < PROGRESS_TASKS
    run: dict[str, Any] = {
        "run": f"progress delay: debug.steps {STEPS}, each watched by its SSE stream",
        "engine": stack.engine,
        "tasks_planned": PROGRESS_TASKS,
        "submitted": watched.tasks,
        "succeeded": watched.succeeded,
        "scaled_down": scaled,
        "stopped_by": watched.stopped_by,
        "clients": ctx.bounds.clients,
        "wall_s": round(wall_s, 1),
        "tasks_per_s": round(watched.succeeded / wall_s, 1),
        "progress_events": len(watched.delays_ms),
        "tasks_missing_progress": watched.short,
        "delay_ms": percentiles(watched.delays_ms) | _p95(watched.delays_ms),
        "errors": dict(watched.errors),
        "processes": processes,
        "loadgen_cpu_s": round(own_cpu_s() - cpu_before, 2),
    }
    if scaled:
        run["note"] = (
            f"scaled down: {watched.tasks} of {PROGRESS_TASKS} tasks submitted within "
            f"--seconds {ctx.bounds.seconds:g}; --seconds 60 gives the issue's 1,000"
        )
    limit = DELAY_P95_LIMIT_MS[stack.engine]
    target(run, f"progress delay p95 <= {limit:g} ms", run["delay_ms"]["p95"], limit, at_most=True)
    return run


def _p95(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p95": None}
    ordered = sorted(values)
    return {"p95": round(ordered[max(0, -(-95 * len(ordered) // 100) - 1)], 2)}


# 2. Idle streams -----------------------------------------------------------------------


@contextlib.contextmanager
def _frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP the pool processes (their tasks stay STARTED and report nothing), SIGCONT
    on the way out, whatever happened."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def _wait_started(client: httpx.AsyncClient, task_id: str, timeout_s: float = 30) -> None:
    """Read the task's stream until its `started` event: waiting on the thing itself."""
    async with asyncio.timeout(timeout_s):
        async with aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events") as source:
            async for sse in source.aiter_sse():
                if sse.event == "started":
                    return
                if sse.event == "completed":
                    raise RuntimeError(f"task {task_id} ended before it could be watched idle")


async def _hold_streams(
    stack: Stack, task_ids: list[str], window_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Open a stream on each id, wait until every one has had its first event (connected),
    then measure the window; the meter's figures and the streams' own."""
    meter = stack.meter()
    rss_before = meter.rss_mb("api")
    settled = 0  # streams that had their first event, or ended before it
    open_now = 0
    all_settled = asyncio.Event()
    gate = asyncio.Semaphore(IDLE_CONNECTING)
    events: Counter[str] = Counter()
    errors: Counter[str] = Counter()

    def settle() -> None:
        nonlocal settled
        settled += 1
        gate.release()
        if settled == len(task_ids):
            all_settled.set()

    async def hold(client: httpx.AsyncClient, task_id: str) -> None:
        nonlocal open_now
        await gate.acquire()
        opening = True
        try:
            async with aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events") as source:
                async for sse in source.aiter_sse():
                    events[sse.event] += 1
                    if opening:
                        opening = False
                        open_now += 1
                        settle()
                    if sse.event == "completed":
                        errors["completed_while_idle"] += 1
                        break
            errors["ended_by_server"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # counted: a refused or cut stream is a figure
            errors[type(exc).__name__] += 1
        finally:
            if not opening:
                open_now -= 1
            else:
                settle()

    began = time.monotonic()
    async with _client(stack.base_url, len(task_ids) + 8) as client:
        streams = [asyncio.create_task(hold(client, task_id)) for task_id in task_ids]
        try:
            with contextlib.suppress(TimeoutError):  # figures even when some never open
                await asyncio.wait_for(all_settled.wait(), 120)
            connect_s = time.monotonic() - began
            open_at_start = open_now
            meter.start()
            await asyncio.sleep(window_s)  # the window itself: what is measured
            processes = meter.stop()
            rss_held = meter.rss_mb("api")
            open_at_end = open_now
        finally:
            for stream in streams:
                stream.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
    api = processes.get("api", {})
    figures = {
        "streams": len(task_ids),
        "streams_open": open_at_start,
        "streams_open_at_end": open_at_end,
        "connect_s": round(connect_s, 1),
        "window_s": window_s,
        "api_rss_mb_before": rss_before,
        "api_rss_mb_held": rss_held,
        "api_extra_rss_mb": round(rss_held - rss_before, 1),
        "api_cpu_per_s": round(api.get("cpu_s", 0.0) / window_s, 3),
        "events_received": dict(events),
        "errors": dict(errors),
    }
    return processes, figures


def _idle_run(stack: Stack, name: str, task_ids: list[str]) -> dict[str, Any]:
    processes, figures = asyncio.run(_hold_streams(stack, task_ids, IDLE_WINDOW_S))
    stack.check()
    run: dict[str, Any] = {"run": name, "engine": stack.engine, **figures, "processes": processes}
    target(
        run,
        f"API extra RSS <= {IDLE_RSS_LIMIT_MB:g} MB",
        figures["api_extra_rss_mb"],
        IDLE_RSS_LIMIT_MB,
        at_most=True,
    )
    target(
        run,
        f"API CPU <= {IDLE_CPU_LIMIT:.0%} of a core",
        figures["api_cpu_per_s"],
        IDLE_CPU_LIMIT,
        at_most=True,
    )
    return run


def _idle(stack: Stack) -> list[dict[str, Any]]:
    """Both idle runs behind one frozen pool: 2 STARTED tasks whose processes are stopped
    (SIGSTOP) report nothing and hold both slots, so the tasks submitted next stay QUEUED.
    On the way out the pool resumes and every task is awaited: nothing is left in a queue
    another stack's worker would take."""

    async def start_two(client: httpx.AsyncClient) -> list[str]:
        ids = [await _submit(client, {"steps": 1, "step_s": 5}) for _ in range(2)]
        await asyncio.gather(*(_wait_started(client, i) for i in ids))
        return ids

    async def queue_up(client: httpx.AsyncClient) -> list[str]:
        return [await _submit(client, {"steps": 1}) for _ in range(IDLE_STREAMS)]

    async def drain(client: httpx.AsyncClient, ids: list[str]) -> None:
        deadline = time.monotonic() + 120
        gate = asyncio.Semaphore(32)

        async def one(task_id: str) -> None:
            async with gate:
                await _final(client, task_id, deadline)

        await asyncio.gather(*(one(i) for i in ids))

    def call(step: Any, *args: Any) -> Any:
        async def go() -> Any:
            async with _client(stack.base_url, 32) as client:
                return await step(client, *args)

        return asyncio.run(go())

    blockers: list[str] = call(start_two)
    queued: list[str] = []
    try:
        with _frozen(stack.pool_pids()):
            on_started = _idle_run(
                stack,
                f"{IDLE_STREAMS} idle streams on 2 STARTED silent tasks (pool frozen)",
                [blockers[i % 2] for i in range(IDLE_STREAMS)],
            )
            queued = call(queue_up)
            on_queued = _idle_run(
                stack,
                f"{IDLE_STREAMS} idle streams on {IDLE_STREAMS} QUEUED tasks "
                "(behind the frozen pool)",
                queued,
            )
    finally:
        call(drain, blockers + queued)
    return [on_started, on_queued]


# 3. ETA --------------------------------------------------------------------------------


async def _eta_samples(base_url: str, count: int) -> list[dict[str, Any]]:
    """Submit `count` tasks from 8 clients, each read back at once; then every final record."""
    samples: list[dict[str, Any]] = []
    next_index = 0

    async def submitter() -> None:
        nonlocal next_index
        async with _client(base_url) as client:
            while next_index < count:
                next_index += 1
                task_id = await _submit(client, STEPS)
                sent = time.time()
                record = (await client.get(f"/v1/tasks/{task_id}")).json()
                read_at = (sent + time.time()) / 2  # the server's read is in between
                samples.append({"id": task_id, "read_at": read_at, "record": record})

    await asyncio.gather(*(submitter() for _ in range(8)))
    deadline = time.monotonic() + 120
    gate = asyncio.Semaphore(32)
    async with _client(base_url, 32) as client:

        async def final(sample: dict[str, Any]) -> None:
            async with gate:
                sample["final"] = await _final(client, sample["id"], deadline)

        await asyncio.gather(*(final(s) for s in samples))
    return samples


def _eta(ctx: Context, stack: Stack) -> dict[str, Any]:
    count = ETA_TASKS
    if ctx.bounds.seconds < FULL_SECONDS:
        count = max(50, int(ETA_TASKS * ctx.bounds.seconds / FULL_SECONDS))
    samples = asyncio.run(_eta_samples(stack.base_url, count))
    stack.check()
    to_start: list[float] = []
    to_finish: list[float] = []
    skipped: Counter[str] = Counter()
    for sample in samples:
        record, final = sample["record"], sample["final"]
        if record.get("status") != "QUEUED":
            skipped["started_before_read"] += 1
            continue
        if record.get("eta_s") is None:
            skipped["eta_null"] += 1
            continue
        if final.get("status") != "SUCCESS":
            skipped[f"task:{final.get('status')}"] += 1
            continue
        eta = float(record["eta_s"])
        waited = _at(final["started_at"]) - sample["read_at"]
        took = _at(final["finished_at"]) - sample["read_at"]
        if waited > 0:
            to_start.append(abs(eta - waited) / waited)
        if took > 0:
            to_finish.append(abs(eta - took) / took)
    run: dict[str, Any] = {
        "run": f"ETA: {count} debug.steps {STEPS} submitted at once on 2 slots",
        "engine": stack.engine,
        "tasks": count,
        "scaled_down": count < ETA_TASKS,
        "compared": len(to_start),
        "skipped": dict(skipped),
        "error_vs_start": _shares(to_start),
        "error_vs_finish": _shares(to_finish),
    }
    median = run["error_vs_start"]["median"]
    target(
        run,
        f"ETA median error vs start <= {ETA_ERROR_LIMIT:.0%}",
        median,
        ETA_ERROR_LIMIT,
        at_most=True,
    )
    return run


def _shares(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None}
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[max(0, -(-9 * len(ordered) // 10) - 1)], 3),
    }


# Table ---------------------------------------------------------------------------------


def table(outcome: dict[str, Any]) -> Table:
    """One row per run: the figure each goal is about, and the verdicts."""
    table = Table(title="events", title_justify="left")
    for column in ("engine", "run", "figures", "targets"):
        table.add_column(column, justify="left")
    for run in outcome["runs"]:
        if "delay_ms" in run:
            d = run["delay_ms"]
            figures = (
                f"{run['succeeded']}/{run['tasks_planned']} tasks, {run['tasks_per_s']}/s; "
                f"delay p50 {d['p50']} / p95 {d['p95']} / max {d['max']} ms"
            )
            if run["scaled_down"]:
                figures += " (scaled down by --seconds)"
        elif "api_extra_rss_mb" in run:
            figures = (
                f"{run['streams_open']}/{run['streams']} open in {run['connect_s']} s "
                f"({run['streams_open_at_end']} at the end); "
                f"API +{run['api_extra_rss_mb']} MB, {run['api_cpu_per_s']:.1%} of a core"
            )
        else:
            e, f = run["error_vs_start"], run["error_vs_finish"]
            figures = (
                f"{run['compared']}/{run['tasks']} compared; median error vs start "
                f"{e['median']}, vs finish {f['median']}"
            )
        verdicts = "; ".join(f"{t['result']} {t['target']}" for t in run.get("targets", []))
        table.add_row(run["engine"], run["run"], figures, verdicts)
    return table
