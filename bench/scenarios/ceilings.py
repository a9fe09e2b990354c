"""The ceilings: the least an HTTP request and a Celery task can cost on this machine.

HTTP: `ceiling_app.py`, a bare FastAPI app on uvicorn, driven like the service. Engine:
`celery_noop.py`, a Celery no-op round trip on the run's RabbitMQ and Redis. Both run first
in an invocation, so every later run is also given as a share of them (Context.with_ratios).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadgen import LoadResult, Sample
from procstats import Meter
from stack import (
    BENCH_DIR,
    WORKER_CONCURRENCY,
    BareStack,
    clean_env,
    command_process,
    pid_of,
    started,
)

from .context import Context
from .measure import Bounds, closed_loop, measure, warm


def run(ctx: Context) -> dict[str, Any]:
    runs = []
    with started(BareStack(ctx.workdir / "bare")) as bare:
        warm(bare, "noop", lambda i: {"i": i}, 50)
        http = measure(
            bare,
            closed_loop(bare, "noop", lambda i: {"i": i}, ctx.bounds),
            name="http ceiling (bare FastAPI, submit + 1 poll)",
            engine="bare-uvicorn",
        )
    ctx.ceilings.http = http
    runs.append(http)

    redis_server, _ = ctx.infra.ensure()
    with celery_noop_ceiling(ctx) as engine_run:
        engine = engine_run("engine ceiling (Celery no-op round trip)")
    ctx.ceilings.engine = engine
    runs.append(engine)
    ctx.ceilings.redis_benchmark = _redis_benchmark(redis_server.port, ctx.bounds.clients)
    embedded = _embedded_engine_ceiling(ctx)
    # Read by the scenarios that give the embedded engine's figures a ratio (curves, peers).
    ctx.ceilings.embedded_engine = embedded  # type: ignore[attr-defined]  # see context.py
    runs.append(embedded)
    return {"runs": runs, "redis_benchmark": ctx.ceilings.redis_benchmark}


@contextlib.contextmanager
def celery_noop_ceiling(ctx: Context) -> Iterator[Callable[[str], dict[str, Any]]]:
    """The engine ceiling's worker (`celery_noop.py`) on the run's RabbitMQ and Redis, warmed
    up; yields `run(name)`, one measured closed-loop run within `ctx.bounds`. The overhead
    scenario runs it again beside the service, round after round, for same-round ratios."""
    _, rabbitmq = ctx.infra.ensure()
    backend = ctx.infra.redis_url()
    env = clean_env(
        PYTHONPATH=str(BENCH_DIR), BENCH_BROKER_URL=rabbitmq.url, BENCH_BACKEND_URL=backend
    )
    import celery_noop

    client_app = celery_noop.make_app(rabbitmq.url, backend)  # the worker's reads its env
    argv = [sys.executable, "-m", "celery", "-A", "celery_noop", "worker", "-Q", "bench_noop"]
    argv += ["--concurrency", str(WORKER_CONCURRENCY), "-P", "prefork", "--loglevel", "INFO"]
    worker = command_process("celery-noop", argv, env=env, workdir=ctx.workdir)
    try:
        worker.wait_for_line(" ready.", timeout=60)

        def load(bounds: Bounds) -> Callable[[], LoadResult]:
            return lambda: asyncio.run(_celery_round_trips(client_app, backend, bounds))

        load(replace(ctx.bounds, max_tasks=50, seconds=30))()

        def run(name: str) -> dict[str, Any]:
            return measure(
                Meter({"workers": pid_of(worker), **ctx.infra.pids()}),
                load(ctx.bounds),
                name=name,
                engine="rabbitmq+redis",
            )

        yield run
    finally:
        worker.stop()
        client_app.close()


def _embedded_engine_ceiling(ctx: Context) -> dict[str, Any]:
    """The same Celery no-op through the embedded engine's SQLite broker (asyncml's kombu
    transport, polled every `embedded_poll_interval_s` as the service's workers poll it),
    its result in Celery's database backend on SQLite, so the embedded figures have a
    ratio too. Not a bound on the service: the worker takes one message per query of the
    broker table (about 45 ms each on this loaded machine, a first measure: ~10-20 tasks/s),
    which the service's own embedded engine may do better than.

    SQLite has no notifications: the client polls the result table (one query for every
    awaited result, see `_threaded_round_trips`).
    """
    from celery import Celery
    from celery_noop import QUEUE, TASK

    from asyncml.engine.embedded import broker_url
    from asyncml.settings import Settings

    folder = ctx.workdir / "embedded-ceiling"
    folder.mkdir(parents=True, exist_ok=True)
    results = (folder / "results.sqlite3").resolve()
    broker, backend = broker_url(folder), f"db+sqlite:///{results}"
    poll_s = Settings().embedded_poll_interval_s
    env = clean_env(PYTHONPATH=str(BENCH_DIR), BENCH_BROKER_URL=broker, BENCH_BACKEND_URL=backend)
    # celery_noop's app, with the asyncml transport registered first (an import does it).
    code = (
        "import asyncml.engine.embedded, celery_noop; "
        "celery_noop.app.conf.broker_transport_options = "
        f"{{'polling_interval': {poll_s}}}; celery_noop.app.worker_main(["
        f"'worker', '-Q', '{QUEUE}', '--concurrency', '{WORKER_CONCURRENCY}', "
        "'-P', 'prefork', '--loglevel', 'INFO'])"
    )
    worker = command_process(
        "celery-noop-embedded", [sys.executable, "-c", code], env=env, workdir=ctx.workdir
    )
    app = Celery("bench_noop_embedded", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        broker_transport_options={"polling_interval": poll_s},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
    )
    try:
        worker.wait_for_line(" ready.", timeout=60)

        def load(bounds: Bounds) -> Callable[[], LoadResult]:
            return lambda: _threaded_round_trips(app, TASK, QUEUE, bounds, poll_s, results)

        load(replace(ctx.bounds, max_tasks=30, seconds=30))()
        return measure(
            Meter({"workers": pid_of(worker)}),
            load(ctx.bounds),
            name="embedded engine ceiling (Celery no-op through the SQLite broker)",
            engine="embedded",
            poll_interval_s=poll_s,
        )
    finally:
        worker.stop()
        app.close()


def _threaded_round_trips(
    app: Any, task: str, queue: str, bounds: Bounds, poll_s: float, results_db: Path
) -> LoadResult:
    """Closed loop like run_load, one thread per client: publish, then await the result.

    One poller reads every awaited result in one query each `poll_s` (as the RabbitMQ
    ceiling's one pattern subscription serves every client): 16 clients each polling the
    result table would measure SQLite's lock, not the engine.
    """
    import sqlite3
    import threading

    result = LoadResult()
    lock = threading.Lock()
    waiting: dict[str, threading.Event] = {}
    stop = threading.Event()
    deadline = time.perf_counter() + bounds.seconds
    issued = 0

    def poller() -> None:
        db = None
        while not stop.wait(poll_s):
            with lock:
                ids = list(waiting)
            if not ids:
                continue
            if db is None:
                try:
                    db = sqlite3.connect(results_db, timeout=30)
                except sqlite3.Error:
                    continue  # the backend creates its table with its first result
            marks = ",".join("?" * len(ids))
            try:
                rows = db.execute(
                    f"SELECT task_id FROM celery_taskmeta WHERE status = 'SUCCESS' "  # noqa: S608  # placeholders only
                    f"AND task_id IN ({marks})",
                    ids,
                ).fetchall()
            except sqlite3.OperationalError:
                continue  # no table yet
            with lock:
                for (task_id,) in rows:
                    event = waiting.pop(task_id, None)
                    if event is not None:
                        event.set()
        if db is not None:
            db.close()

    def client_loop() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= bounds.max_tasks:
                    return
                if time.perf_counter() >= deadline:
                    result.stopped_by = "deadline"
                    return
                issued += 1
                sample = Sample(submit_start=time.perf_counter(), submit_end=0.0)
                result.samples.append(sample)
            task_id, done = str(uuid.uuid4()), threading.Event()
            with lock:
                waiting[task_id] = done
            try:
                app.send_task(task, task_id=task_id, queue=queue)
            except Exception as exc:  # a broker error is a result here, not a crash
                with lock:
                    result.errors[f"submit:{type(exc).__name__}"] += 1
                continue
            sample.submit_end = time.perf_counter()
            if not done.wait(max(0.1, deadline + 10.0 - time.perf_counter())):
                with lock:
                    result.errors["unfinished"] += 1
                return
            sample.seen = time.perf_counter()
            sample.status = "SUCCESS"

    threads = [threading.Thread(target=client_loop) for _ in range(bounds.clients)]
    watcher = threading.Thread(target=poller, name="results-poller")
    watcher.start()
    result.started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.ended = time.perf_counter()
    stop.set()
    watcher.join()
    return result


async def _celery_round_trips(app: Any, redis_url: str, bounds: Bounds) -> LoadResult:
    """Closed loop like run_load: publish a no-op, await its result's Redis publication.

    Celery's Redis backend PUBLISHes each result on its key's channel; one pattern
    subscription resolves every waiting client, so no thread blocks per task.
    """
    import redis.asyncio
    from celery_noop import QUEUE, TASK

    result = LoadResult()
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
    client = redis.asyncio.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.psubscribe("celery-task-meta-*")
    confirmed = await pubsub.get_message(timeout=5)
    if not confirmed or confirmed["type"] != "psubscribe":
        raise RuntimeError(f"no psubscribe confirmation from {redis_url}: {confirmed}")

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            task_id = message["channel"].decode().removeprefix("celery-task-meta-")
            future = waiting.pop(task_id, None)
            if future is not None and not future.done():
                future.set_result(json.loads(message["data"]))

    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + bounds.seconds
    drained = deadline + 10.0  # as run_load: in-flight tasks may finish after the deadline
    issued = 0

    async def client_loop() -> None:
        nonlocal issued
        while issued < bounds.max_tasks:
            if time.perf_counter() >= deadline:
                result.stopped_by = "deadline"
                return
            issued += 1
            task_id = str(uuid.uuid4())
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            waiting[task_id] = future
            sample = Sample(submit_start=time.perf_counter(), submit_end=0.0)
            result.samples.append(sample)
            try:
                await asyncio.to_thread(app.send_task, TASK, task_id=task_id, queue=QUEUE)
            except Exception as exc:  # a broker refusal is a result here, not a crash
                result.errors[f"submit:{type(exc).__name__}"] += 1
                continue
            sample.submit_end = time.perf_counter()
            try:
                meta = await asyncio.wait_for(future, max(0.1, drained - time.perf_counter()))
            except TimeoutError:
                result.errors["unfinished"] += 1
                waiting.pop(task_id, None)
                return
            sample.seen = time.perf_counter()
            sample.status = meta.get("status")
            if sample.status != "SUCCESS":
                result.errors[f"task:{sample.status}"] += 1

    listener = asyncio.create_task(listen())
    result.started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(bounds.clients)))
    result.ended = time.perf_counter()
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    await client.aclose()
    return result


def _redis_benchmark(port: int, clients: int) -> dict[str, float] | None:
    """redis-benchmark's PING, SET and GET per second with `clients` clients, when installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-n", "50000", "-c", str(clients)]
    argv += ["-t", "ping,set,get", "--csv"]
    out = subprocess.run(  # noqa: S603  # a fixed argv of a local binary, loopback only
        argv, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    figures: dict[str, float] = {}
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] != "test":
            with contextlib.suppress(ValueError):
                figures[cells[0].lower().replace(" ", "_") + "_per_s"] = float(cells[1])
    return figures
