"""Run benchmark scenarios: `python bench/run.py [scenario ...]` (all of them by default).

Each scenario starts the real processes on loopback (stack.py), drives them with the load
generator (loadgen.py), prints one JSON line (machine-readable, stable keys) and a table for
people. Ceilings run first in the same invocation, so every platform figure is also given as
a ratio to the ceiling measured minutes before on the same machine and load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from loadgen import LoadResult, Sample, run_load, run_open_loop
from procstats import Meter, own_cpu_s
from rich.console import Console
from rich.table import Table
from stack import (
    BENCH_SERVICE_ENV,
    WORKER_CONCURRENCY,
    BrokerStack,
    EmbeddedStack,
    FixtureServer,
    Infra,
    Stack,
    clean_env,
    command_process,
    pid_of,
    started,
)
from stack import free_ports as _free_ports  # type: ignore[attr-defined]  # re-exported helper
from stack import wait_until_ready as _wait_until_ready  # type: ignore[attr-defined]  # same

BENCH_DIR = Path(__file__).resolve().parent
CONCURRENCY = 16  # clients of the closed loop
COUNT = 5000  # tasks per measured run, at most
DEADLINE_S = 15.0  # wall-clock cap of one measured run
# Burst runs submit everything, then wait: sized so the backlog drains in about 15 s.
BURST_COUNT = {"embedded": 300, "rabbitmq+redis": 1500}
# Issue #7: p50 submit -> result seen at 25 % of the closed-loop throughput.
LATENCY_25_LIMIT_MS = {"embedded": 100.0, "rabbitmq+redis": 15.0}
LOADGEN_BOUND = 0.85  # generator CPU / wall time above which a run measures the generator

console = Console(highlight=False, width=max(120, shutil.get_terminal_size().columns))


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "commit": _commit(),
    }


def _commit() -> str | None:
    """The service's commit, "+dirty" when src/ has changes: figures move with the code."""
    git = shutil.which("git")
    if git is None:
        return None
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(  # noqa: S603  # fixed git argv in our own checkout
            [git, "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603  # same
            [git, "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return None
    return f"{head}+dirty" if dirty else head or None


def draw_dates() -> list[str]:
    """Every Tuesday and Friday draw from 10-05-2011 to the end of 2025, as DD-MM-YYYY."""
    day, end, dates = date(2011, 5, 10), date(2025, 12, 31), []
    while day <= end:
        if day.weekday() in (1, 4):
            dates.append(day.strftime("%d-%m-%Y"))
        day += timedelta(days=1)
    return dates


# --- measuring ----------------------------------------------------------------------------


def measure(
    stack: Stack | Meter,
    load: Callable[[], LoadResult],
    *,
    name: str,
    engine: str,
    **extra: Any,
) -> dict[str, Any]:
    """Run `load` inside the meter's window; the figures of one run."""
    stack_meter = stack if isinstance(stack, Meter) else stack.meter()
    cpu_before = own_cpu_s()
    stack_meter.start()
    result = load()
    processes = stack_meter.stop()
    if isinstance(stack, Stack):
        stack.check()
    summary = result.summary()
    succeeded = summary["succeeded"] or 1
    for figures in processes.values():
        figures["cpu_ms_per_task"] = round(figures["cpu_s"] * 1000 / succeeded, 2)
    loadgen_cpu_s = round(own_cpu_s() - cpu_before, 2)
    return {
        "run": name,
        "engine": engine,
        **extra,
        **summary,
        "processes": processes,
        "loadgen_cpu_s": loadgen_cpu_s,
        # One core busy with the generator: the figure is the generator's, not the server's.
        "loadgen_bound": loadgen_cpu_s >= LOADGEN_BOUND * summary["wall_s"],
    }


def _load(
    stack: Stack,
    kind: str,
    make_input: Callable[[int], dict[str, Any]],
    *,
    count: int | None = None,
    deadline_s: float | None = None,
    concurrency: int | None = None,
    prefer_wait_s: int = 0,
    burst: bool = False,
    drain_s: float = 10.0,
) -> Callable[[], LoadResult]:
    """A measured load; unset bounds are the run's (--clients, --seconds) at call time."""
    return lambda: asyncio.run(
        run_load(
            stack.base_url,
            kind,
            make_input,
            count=COUNT if count is None else count,
            concurrency=CONCURRENCY if concurrency is None else concurrency,
            deadline_s=DEADLINE_S if deadline_s is None else deadline_s,
            prefer_wait_s=prefer_wait_s,
            burst=burst,
            drain_s=drain_s,
        )
    )


def _open(
    stack: Stack,
    kind: str,
    make_input: Callable[[int], dict[str, Any]],
    *,
    rate_per_s: float,
    duration_s: float = 8.0,
    prefer_wait_s: int = 0,
) -> Callable[[], LoadResult]:
    """An open-loop load at a fixed arrival rate (loadgen.run_open_loop)."""
    return lambda: asyncio.run(
        run_open_loop(
            stack.base_url,
            kind,
            make_input,
            rate_per_s=rate_per_s,
            duration_s=duration_s,
            prefer_wait_s=prefer_wait_s,
        )
    )


def target(
    run: dict[str, Any], name: str, value: float | None, limit: float, *, at_most: bool
) -> dict[str, Any]:
    """Record one target of issue #7/#10 on `run`: PASS when value <= (or >=) limit."""
    ok = value is not None and (value <= limit if at_most else value >= limit)
    entry = {
        "target": name,
        "value": value,
        "limit": limit,
        "op": "<=" if at_most else ">=",
        "result": "PASS" if ok else "MISS",
    }
    run.setdefault("targets", []).append(entry)
    return entry


def warm(
    stack: Stack,
    kind: str,
    make_input: Callable[[int], dict[str, Any]],
    n: int,
    deadline_s: float = 60,
) -> None:
    """Run `n` tasks unmeasured: imports, connections, caches; fail loudly if they fail."""
    result = _load(stack, kind, make_input, count=n, deadline_s=deadline_s, concurrency=4)()
    summary = result.summary()
    if summary["succeeded"] != n:
        raise RuntimeError(f"warm-up of {kind} on {stack.engine}: {summary}")


def ratios(run: dict[str, Any], ceiling: dict[str, Any] | None, label: str) -> None:
    if ceiling is None or not ceiling.get("tasks_per_s") or not run.get("tasks_per_s"):
        run[f"vs_{label}"] = None
        return
    p50, ceiling_p50 = run["latency_ms"]["p50"], ceiling["latency_ms"]["p50"]
    if run.get("burst"):
        p50 = None  # a burst's latency is mostly its own backlog: no ceiling to compare with
    run[f"vs_{label}"] = {
        "tasks_per_s": round(run["tasks_per_s"] / ceiling["tasks_per_s"], 3),
        "latency_p50_x": round(p50 / ceiling_p50, 1) if p50 and ceiling_p50 else None,
    }


# --- ceilings -----------------------------------------------------------------------------


class Ceilings:
    def __init__(self) -> None:
        self.http: dict[str, Any] | None = None
        self.engine: dict[str, Any] | None = None
        self.redis_benchmark: dict[str, float] | None = None


class _BareStack(Stack):
    engine = "bare-uvicorn"

    def __init__(self, workdir: Path) -> None:
        (port,) = _free_ports(1)
        self.base_url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "uvicorn", "ceiling_app:app", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
        env = clean_env(PYTHONPATH=str(BENCH_DIR))
        self.process = command_process("bare-uvicorn", argv, env=env, workdir=workdir)
        self.processes = [self.process]
        try:
            _wait_until_ready(self.base_url, self.process)
        except BaseException:
            self.process.stop()
            raise

    def meter(self) -> Meter:
        return Meter({"api": pid_of(self.process)})

    def stop(self) -> None:
        self.process.stop()


async def _celery_round_trips(
    app: Any, redis_url: str, *, count: int, concurrency: int, deadline_s: float
) -> LoadResult:
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
    deadline = time.perf_counter() + deadline_s
    drained = deadline + 10.0  # as run_load: in-flight tasks may finish after the deadline
    issued = 0

    async def client_loop() -> None:
        nonlocal issued
        while issued < count:
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
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    result.ended = time.perf_counter()
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    await client.aclose()
    return result


def _redis_benchmark(port: int) -> dict[str, float] | None:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-n", "50000", "-c", str(CONCURRENCY)]
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


def scenario_ceilings(ctx: Context) -> dict[str, Any]:
    runs = []
    with started(_BareStack(ctx.workdir / "bare")) as bare:
        warm(bare, "noop", lambda i: {"i": i}, 50)
        http = measure(
            bare,
            _load(bare, "noop", lambda i: {"i": i}),
            name="http ceiling (bare FastAPI, submit + 1 poll)",
            engine="bare-uvicorn",
        )
    ctx.ceilings.http = http
    runs.append(http)

    redis_server, rabbitmq = ctx.infra.ensure()
    backend = ctx.infra.redis_url()
    env = clean_env(
        PYTHONPATH=str(BENCH_DIR), BENCH_BROKER_URL=rabbitmq.url, BENCH_BACKEND_URL=backend
    )
    os.environ.update(BENCH_BROKER_URL=rabbitmq.url, BENCH_BACKEND_URL=backend)
    import celery_noop

    argv = [sys.executable, "-m", "celery", "-A", "celery_noop", "worker", "-Q", "bench_noop"]
    argv += ["--concurrency", str(WORKER_CONCURRENCY), "-P", "prefork", "--loglevel", "INFO"]
    worker = command_process("celery-noop", argv, env=env, workdir=ctx.workdir)
    try:
        worker.wait_for_line(" ready.", timeout=60)

        def load(n: int, deadline_s: float) -> Callable[[], LoadResult]:
            return lambda: asyncio.run(
                _celery_round_trips(
                    celery_noop.app,
                    backend,
                    count=n,
                    concurrency=CONCURRENCY,
                    deadline_s=deadline_s,
                )
            )

        load(50, 30)()
        engine = measure(
            Meter({"workers": pid_of(worker), **ctx.infra.pids()}),
            load(COUNT, DEADLINE_S),
            name="engine ceiling (Celery no-op round trip)",
            engine="rabbitmq+redis",
        )
    finally:
        worker.stop()
        celery_noop.app.close()
    ctx.ceilings.engine = engine
    runs.append(engine)
    ctx.ceilings.redis_benchmark = _redis_benchmark(redis_server.port)
    return {"runs": runs, "redis_benchmark": ctx.ceilings.redis_benchmark}


# --- platform scenarios -------------------------------------------------------------------


class Context:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.infra = Infra(workdir / "infra")
        self.ceilings = Ceilings()
        self.overhead_tps: float | None = None  # rabbitmq+redis debug.echo, submit + poll
        self.fixtures = FixtureServer(workdir / "files")
        (workdir / "files").mkdir(parents=True, exist_ok=True)

    def euro_env(self) -> dict[str, str]:
        return {
            "ASYNCML_EURO_RESULTS_URL": f"{self.fixtures.url}/results/{{date}}",
            # The local fixture is the source: no politeness owed, so no shared schedule.
            "ASYNCML_EURO_RATE_PER_S": "100",  # the most the setting allows
        }

    engine = "rabbitmq+redis"  # of the kind scenarios (euro, audio); --engine changes it

    def stack(self, engine: str, extra_env: dict[str, str]) -> Stack:
        workdir = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=self.workdir))
        if engine == "embedded":
            return EmbeddedStack(workdir, extra_env)
        return BrokerStack(workdir, self.infra, extra_env)

    def with_ratios(self, run: dict[str, Any]) -> dict[str, Any]:
        ratios(run, self.ceilings.http, "http_ceiling")
        if run["engine"] == "rabbitmq+redis":
            ratios(run, self.ceilings.engine, "engine_ceiling")
        return run


def _overhead(ctx: Context, engine: str) -> dict[str, Any]:
    """debug.echo (ASYNCML_DEBUG_KINDS=true): no I/O and no cache, the platform's own cost."""

    def make_input(i: int) -> dict[str, Any]:
        return {"payload": {"i": i}}

    with started(ctx.stack(engine, {})) as stack:
        warm(stack, "debug.echo", make_input, 40)
        polled = measure(
            stack,
            _load(stack, "debug.echo", make_input),
            name="overhead (debug.echo): submit, then long-poll",
            engine=engine,
            kind="debug.echo",
        )
        waited = measure(
            stack,
            _load(stack, "debug.echo", make_input, prefer_wait_s=10),
            name="overhead, submit with Prefer: wait=10",
            engine=engine,
            kind="debug.echo",
        )
        # Issue #7: p50 at a load of 25 % of the closed-loop throughput measured just before.
        peak = polled["tasks_per_s"] or 1.0
        if engine == "rabbitmq+redis":
            ctx.overhead_tps = polled["tasks_per_s"]
        if engine == "embedded":
            target(polled, "tasks/s >= 100", polled["tasks_per_s"], 100, at_most=False)
        rate = round(peak * 0.25, 1)
        limit = LATENCY_25_LIMIT_MS[engine]
        quarter = []
        for prefer, label in ((0, "submit, then long-poll"), (10, "Prefer: wait=10")):
            run = measure(
                stack,
                _open(stack, "debug.echo", make_input, rate_per_s=rate, prefer_wait_s=prefer),
                name=f"overhead at 25 % load (open loop, {rate:g}/s): {label}",
                engine=engine,
                kind="debug.echo",
                open_loop={"rate_per_s": rate, "of_tasks_per_s": peak, "fraction": 0.25},
            )
            target(
                run,
                f"p50 at 25 % load <= {limit} ms",
                run["latency_ms"]["p50"],
                limit,
                at_most=True,
            )
            quarter.append(run)
        burst = measure(
            stack,
            _load(
                stack,
                "debug.echo",
                make_input,
                count=BURST_COUNT[engine],
                burst=True,
                drain_s=30,
            ),
            name=f"overhead, burst of {BURST_COUNT[engine]}: submit all, then wait",
            engine=engine,
            kind="debug.echo",
            burst=True,
        )
    runs = [ctx.with_ratios(polled), ctx.with_ratios(waited), ctx.with_ratios(burst)]
    runs += [ctx.with_ratios(run) for run in quarter]
    if engine == "rabbitmq+redis":  # issue #7: throughput >= 50 % of the engine ceiling
        for run in (polled, waited, burst):
            share = (run.get("vs_engine_ceiling") or {}).get("tasks_per_s")
            target(run, "tasks/s / engine ceiling >= 0.5", share, 0.5, at_most=False)
    return {"runs": runs}


def scenario_embedded(ctx: Context) -> dict[str, Any]:
    return _overhead(ctx, "embedded")


def scenario_rabbitmq_redis(ctx: Context) -> dict[str, Any]:
    return _overhead(ctx, "rabbitmq+redis")


def scenario_euro(ctx: Context) -> dict[str, Any]:
    """Uncached dates (one page fetched and parsed each), then the same dates again, cached."""
    dates = draw_dates()
    runs = []
    with started(ctx.stack(ctx.engine, ctx.euro_env())) as stack:
        warm(stack, "euro.results", lambda i: {"draw_date": dates[-1 - i]}, 8)
        fresh = dates[: len(dates) - 8]
        hits_before = ctx.fixtures.hits
        uncached = measure(
            stack,
            _load(stack, "euro.results", lambda i: {"draw_date": fresh[i]}, count=len(fresh)),
            name="euro.results uncached (local page)",
            engine=stack.engine,
            kind="euro.results",
        )
        uncached["source_requests"] = ctx.fixtures.hits - hits_before
        done = uncached["submitted"]
        hits_before = ctx.fixtures.hits
        cached = measure(
            stack,
            _load(stack, "euro.results", lambda i: {"draw_date": fresh[i % done]}),
            name="euro.results cached (same dates again)",
            engine=stack.engine,
            kind="euro.results",
        )
        cached["source_requests"] = ctx.fixtures.hits - hits_before
        if ctx.engine == "rabbitmq+redis" and ctx.overhead_tps and cached["tasks_per_s"]:
            target(
                cached,
                "tasks/s / overhead scenario's (debug.echo, submit + long-poll) >= 0.8",
                round(cached["tasks_per_s"] / ctx.overhead_tps, 3),
                0.8,
                at_most=False,
            )
        runs = [ctx.with_ratios(uncached), ctx.with_ratios(cached)]
    return {"runs": runs}


# CD quality, the common case for WAV: 44.1 kHz, 16-bit, stereo (a 300 s file is 53 MB).
# A 16 kHz mono file would make every baseline (download, decode) look cheap.
AUDIO_RATE, AUDIO_CHANNELS = 44_100, 2
LONG_WAV = "tone-300s-44k-stereo.wav"


def _audio_input(base: str, name: str, where: str = "files") -> Callable[[int], dict[str, Any]]:
    return lambda i: {"audio_url": f"{base}/{where}/{name}"}


def scenario_audio(ctx: Context) -> dict[str, Any]:
    from audio_files import write_audio  # tests/unit, on sys.path through stack

    files_dir = ctx.workdir / "files"
    names = []
    for seconds in (30, 300):
        for fmt in ("WAV", "MP3"):
            name = f"tone-{seconds}s-44k-stereo.{fmt.lower()}"
            if not (files_dir / name).exists():
                write_audio(
                    files_dir / name,
                    seconds=seconds,
                    sample_rate=AUDIO_RATE,
                    channels=AUDIO_CHANNELS,
                    format=fmt,
                )
            names.append(name)
    runs = []
    ranged: dict[str, Any] = {}
    with started(ctx.stack(ctx.engine, {})) as stack:
        first = f"{ctx.fixtures.url}/files/{names[0]}"
        warm(stack, "audio.length", lambda i: {"audio_url": first}, 8)
        for name in names:
            size = (files_dir / name).stat().st_size
            run = measure(
                stack,
                _load(stack, "audio.length", _audio_input(ctx.fixtures.url, name), deadline_s=10),
                name=f"audio.length {name} ({size / 1e6:.2f} MB)",
                engine=stack.engine,
                kind="audio.length",
            )
            runs.append(ctx.with_ratios(run))
            if name == LONG_WAV:
                ranged = run
        # The 300 s WAV from a server that ignores Range, two ways: the service's fallback
        # (audio.length downloads the whole file and reads its header with soundfile, no
        # decode), and the baseline through the same platform (debug.audio_decode
        # downloads the whole file and decodes every sample with librosa, as a naive
        # audio.length would).
        whole = {
            kind: measure(
                stack,
                _load(
                    stack,
                    kind,
                    _audio_input(ctx.fixtures.url, LONG_WAV, "files-norange"),
                    deadline_s=10,
                ),
                name=f"{kind} {LONG_WAV}, {label}",
                engine=stack.engine,
                kind=kind,
            )
            for kind, label in (
                ("audio.length", "server ignores Range (full download)"),
                ("debug.audio_decode", "full download + librosa decode"),
            )
        }
        runs += [ctx.with_ratios(run) for run in whole.values()]
        full, naive = whole["audio.length"], whole["debug.audio_decode"]
    # The cheapest librosa decode (native rate, no resampling) is the baseline of the
    # target; librosa.load's default (resampled to 22.05 kHz, mono) is printed beside it.
    decode_ms = _librosa_decode_ms(files_dir / LONG_WAV, sr=None)
    default_decode_ms = _librosa_decode_ms(files_dir / LONG_WAV, sr=22050, repeats=3)
    task_ms = ranged["breakdown_ms"]["run"]["p50"]
    ranged["librosa_decode_ms"] = decode_ms
    ranged["librosa_default_decode_ms"] = default_decode_ms
    target(
        ranged,
        "librosa full decode (sr=None) / task running time (p50) >= 20",
        round(decode_ms / task_ms, 1) if task_ms else None,
        20,
        at_most=False,
    )
    full_tps, naive_tps = full["tasks_per_s"], naive["tasks_per_s"]
    target(
        ranged,
        "tasks/s with Range / tasks/s with full download and decode >= 10",
        round(ranged["tasks_per_s"] / naive_tps, 2)
        if naive_tps and ranged["tasks_per_s"]
        else None,
        10,
        at_most=False,
    )
    # Not a target: the service's own fallback (whole file, header read, no decode).
    ranged["vs_full_download_no_decode"] = (
        round(ranged["tasks_per_s"] / full_tps, 2) if full_tps and ranged["tasks_per_s"] else None
    )
    # The decode baseline: a worker that decoded the file with librosa per task could do at
    # most (worker processes x 1000 / decode ms) tasks/s, with no platform cost at all.
    decode_tps = round(WORKER_CONCURRENCY * 1000 / decode_ms, 2)
    ranged["vs_decode_bound"] = (
        round(ranged["tasks_per_s"] / decode_tps, 1) if ranged["tasks_per_s"] else None
    )
    note = (
        f"{LONG_WAV}: librosa.load(sr=None) in-process median {decode_ms:.0f} ms "
        f"(default sr=22050: {default_decode_ms:.0f} ms) "
        f"(bound on {WORKER_CONCURRENCY} processes: {decode_tps:g} tasks/s); service task "
        f"running p50 {_ms(task_ms)} ms; tasks/s with Range {_num(ranged['tasks_per_s'])}, "
        f"full download and decode {_num(naive_tps)}, full download without decode (the "
        f"service's fallback) {_num(full_tps)}; with Range / decode bound: "
        f"{ranged['vs_decode_bound']}x"
    )
    return {
        "runs": runs,
        "librosa_decode_ms": decode_ms,
        "librosa_default_decode_ms": default_decode_ms,
        "decode_bound_tasks_per_s": decode_tps,
        "note": note,
    }


def _librosa_decode_ms(path: Path, *, sr: int | None, repeats: int = 5) -> float:
    """Median wall time of librosa.load(path, sr=sr) in this process (after one warm call)."""
    import librosa

    librosa.load(path, sr=sr)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        librosa.load(path, sr=sr)
        times.append((time.perf_counter() - began) * 1000)
    return round(sorted(times)[len(times) // 2], 1)


# --- models (issue #10 item 7) -------------------------------------------------------------

MODEL_CLIENTS = 64
MODEL_SECONDS = 6.0
IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
IRIS_MAX_BATCH = 32  # src/asyncml/models/example/iris/model.toml [batch] max_batch_size


def _heavy_row(i: int) -> dict[str, Any]:
    from heavy_model import N_FEATURES

    return {f"f{j}": ((i * 31 + j * 7) % 100) / 100 for j in range(N_FEATURES)}


def _ceiling_rows_per_s(model_path: Path, rows: int, input_of: Any, seconds: float) -> float:
    """Rows/s of one onnxruntime session (1 intra-op thread) called in a loop, in-process."""
    import numpy as np
    from heavy_model import session

    sess = session(model_path)
    inputs = input_of(sess, np, rows)
    sess.run(None, inputs)
    calls, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        sess.run(None, inputs)
        calls += 1
    return round(calls * rows / elapsed, 1)


def _iris_inputs(sess: Any, np: Any, rows: int) -> dict[str, Any]:
    name = sess.get_inputs()[0].name
    row = [IRIS_ROW[k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
    return {name: np.array([row] * rows, dtype=np.float32)}


def _heavy_inputs(sess: Any, np: Any, rows: int) -> dict[str, Any]:
    from heavy_model import N_FEATURES

    x = np.random.default_rng(3).random((rows, N_FEATURES), dtype=np.float32)
    return {"input": x}


def _queue_state(ctx: Context) -> str | None:
    """`rabbitmqctl list_queues` (ready, unacknowledged, consumers), for a stalled run."""
    rabbitmq = ctx.infra.rabbitmq
    if rabbitmq is None:
        return None
    try:
        out = rabbitmq.rabbitmqctl(
            "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers"
        )
    except Exception as exc:  # a diagnostic only
        return f"rabbitmqctl failed: {exc}"
    return " | ".join(line for line in out.splitlines() if line.startswith("models"))


def _purge_models_queue(ctx: Context) -> None:
    """Empty the shared RabbitMQ's `models` queue: each stack has its own Redis database, so
    a message left by an earlier stack names a task this stack's store does not hold."""
    if ctx.infra.rabbitmq is not None:
        with contextlib.suppress(Exception):  # no such queue yet: nothing to purge
            ctx.infra.rabbitmq.rabbitmqctl("purge_queue", "models")


def scenario_models(ctx: Context) -> dict[str, Any]:
    """model.iris and a heavy ONNX model, batching on and off, RabbitMQ + Redis, 64 clients."""
    import heavy_model

    import asyncml

    models_dir = ctx.workdir / "models"
    _, depth, heavy_row_ms = heavy_model.calibrated(models_dir / "heavy")
    iris_onnx = Path(asyncml.__file__).parent / "models" / "example" / "iris" / "model.onnx"
    heavy_onnx = models_dir / "heavy" / "model.onnx"
    # In-process ceilings, one process (the service runs one models worker process).
    ceilings = {
        "model.iris": {
            "one_row": _ceiling_rows_per_s(iris_onnx, 1, _iris_inputs, 2.0),
            "batched": _ceiling_rows_per_s(iris_onnx, IRIS_MAX_BATCH, _iris_inputs, 2.0),
            "max_batch_size": IRIS_MAX_BATCH,
        },
        "model.heavy": {
            "one_row": _ceiling_rows_per_s(heavy_onnx, 1, _heavy_inputs, 3.0),
            "batched": _ceiling_rows_per_s(
                heavy_onnx, heavy_model.MAX_BATCH_SIZE, _heavy_inputs, 3.0
            ),
            "max_batch_size": heavy_model.MAX_BATCH_SIZE,
            "depth": depth,
            "width": heavy_model.WIDTH,
            "one_row_ms": heavy_row_ms,
        },
    }
    inputs = {"model.iris": lambda i: dict(IRIS_ROW), "model.heavy": _heavy_row}
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    by: dict[tuple[str, str, str], dict[str, Any]] = {}
    for batching in ("on", "off"):
        env = {
            "ASYNCML_MODELS_BUNDLED": "true",
            "ASYNCML_MODELS_DIR": str(models_dir),
            "ASYNCML_MODELS_BATCHING": "true" if batching == "on" else "false",
            "ASYNCML_MODELS_PRELOAD": "true",
        }
        workdir = Path(tempfile.mkdtemp(prefix=f"models-{batching}-", dir=ctx.workdir))
        _purge_models_queue(ctx)  # a stalled earlier stack leaves tasks another store owns
        stack = BrokerStack(workdir, ctx.infra, env, queues="models", worker_args=())
        with started(stack):
            stalled = False  # a run where nothing finished: the worker took no more tasks
            for kind in ("model.iris", "model.heavy"):
                if stalled:
                    problems.append(f"batching {batching}: {kind} skipped after a stall")
                    continue
                try:
                    warm(stack, kind, inputs[kind], 16, deadline_s=15)
                except RuntimeError as exc:  # reported, and the scenario goes on
                    problems.append(f"batching {batching}: {exc}"[:600])
                    console.print(f"[red]models: {problems[-1]}[/red]")
                for prefer, label in ((0, "submit + long-poll"), (10, "Prefer: wait=10")):
                    run = measure(
                        stack,
                        _load(
                            stack,
                            kind,
                            inputs[kind],
                            concurrency=MODEL_CLIENTS,
                            deadline_s=MODEL_SECONDS,
                        )
                        if not prefer
                        else _load(
                            stack,
                            kind,
                            inputs[kind],
                            concurrency=MODEL_CLIENTS,
                            deadline_s=MODEL_SECONDS,
                            prefer_wait_s=prefer,
                        ),
                        name=f"{kind} batching {batching}, {MODEL_CLIENTS} clients, {label}",
                        engine=stack.engine,
                        kind=kind,
                        batching=batching,
                    )
                    if run["errors"].get("unfinished"):
                        run["broker_queues"] = _queue_state(ctx)  # a stall: what RabbitMQ holds
                    tps = run["tasks_per_s"] or 0.0
                    run["vs_in_process"] = {
                        "one_row": round(tps / ceilings[kind]["one_row"], 3),
                        "batched": round(tps / ceilings[kind]["batched"], 3),
                    }
                    by[(kind, batching, "wait" if prefer else "poll")] = run
                    runs.append(ctx.with_ratios(run))
                    if not run["succeeded"] and run["errors"].get("unfinished"):
                        stalled = True
                        break
            if batching == "on" and not stalled and ("model.iris", "on", "wait") in by:
                # Issue #10: the synchronous path's p50 at 25 % of the tiny model's peak.
                peak = max(
                    by[("model.iris", "on", m)]["tasks_per_s"] or 0.0 for m in ("poll", "wait")
                )
                rate = round(max(1.0, peak * 0.25), 1)
                quarter = measure(
                    stack,
                    _open(
                        stack, "model.iris", inputs["model.iris"], rate_per_s=rate, prefer_wait_s=10
                    ),
                    name=f"model.iris batching on, 25 % load (open loop, {rate:g}/s), "
                    "Prefer: wait=10",
                    engine=stack.engine,
                    kind="model.iris",
                    batching="on",
                    open_loop={"rate_per_s": rate, "of_tasks_per_s": peak, "fraction": 0.25},
                )
                target(
                    quarter,
                    "p50 at 25 % load <= 20 ms",
                    quarter["latency_ms"]["p50"],
                    20,
                    at_most=True,
                )
                runs.append(ctx.with_ratios(quarter))
    empty: dict[str, Any] = {"tasks_per_s": None, "vs_in_process": {"batched": None}}
    iris_on = by.get(("model.iris", "on", "poll"), empty)
    if iris_on is not empty:
        target(
            iris_on,
            "tasks/s / overhead scenario's (debug.echo, submit + long-poll) >= 0.8",
            round(iris_on["tasks_per_s"] / ctx.overhead_tps, 3)
            if ctx.overhead_tps and iris_on["tasks_per_s"]
            else None,
            0.8,
            at_most=False,
        )

    def best(batching: str) -> dict[str, Any]:
        found = [by[key] for m in ("poll", "wait") if (key := ("model.heavy", batching, m)) in by]
        return max(found, key=lambda r: r["tasks_per_s"] or 0.0) if found else empty

    heavy_on, heavy_off = best("on"), best("off")
    if heavy_on is not empty:
        target(
            heavy_on,
            "predictions/s / in-process batched ceiling >= 0.6",
            heavy_on["vs_in_process"]["batched"],
            0.6,
            at_most=False,
        )
        target(
            heavy_on,
            "predictions/s / own unbatched end-to-end (best run) >= 2",
            round(heavy_on["tasks_per_s"] / heavy_off["tasks_per_s"], 2)
            if heavy_on["tasks_per_s"] and heavy_off["tasks_per_s"]
            else None,
            2,
            at_most=False,
        )
    note = (
        "in-process ceilings (1 process, 1 onnxruntime thread), rows/s: "
        + "; ".join(
            f"{kind} one row {c['one_row']:g}, batches of {c['max_batch_size']} {c['batched']:g}"
            for kind, c in ceilings.items()
        )
        + f". model.heavy: {depth} tanh layers of {heavy_model.WIDTH}, one row "
        f"{heavy_row_ms} ms. overhead (debug.echo) tasks/s: {ctx.overhead_tps}"
    )
    return {
        "runs": runs,
        "ceilings": ceilings,
        "overhead_tasks_per_s": ctx.overhead_tps,
        "problems": problems,
        "note": note,
    }


# --- worker footprint (issue #7: idle after start-up, RSS <= 150 MB, start-up <= 3 s) -------

FOOTPRINT_RSS_MB = 150.0
FOOTPRINT_START_S = 3.0
FOOTPRINT_IDLE_S = 3.0
FOOTPRINT_WORKERS = [
    ("audio,euro,webhooks", ["--concurrency", str(WORKER_CONCURRENCY)]),
    ("models", []),
]


def _proc_mb(pid: int, field: str) -> float | None:
    """A field of /proc/<pid>/status (VmRSS) or smaps_rollup (Pss), in MB."""
    source = "smaps_rollup" if field == "Pss" else "status"
    try:
        text = Path(f"/proc/{pid}/{source}").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _footprint_once(ctx: Context, queues: str, extra: list[str], run_no: int) -> dict[str, Any]:
    from processes import ServiceProcess, service_env
    from procstats import cmdline, tree

    _, rabbitmq = ctx.infra.ensure()
    workdir = Path(tempfile.mkdtemp(prefix="footprint-", dir=ctx.workdir))
    (port,) = _free_ports(1)
    env = service_env(
        data_dir=workdir / "data",
        api_port=port,
        broker_url=rabbitmq.url,
        backend_url=ctx.infra.redis_url(),
        extra={**BENCH_SERVICE_ENV, "ASYNCML_MODELS_BUNDLED": str(queues == "models").lower()},
    )
    argv = ["worker", "--queues", queues, *extra]
    worker = ServiceProcess(
        f"worker-{queues.replace(',', '-')}-{run_no}", argv, env=env, workdir=workdir
    )
    began = time.perf_counter()
    worker.start()
    try:
        worker.wait_for_line(" ready.", timeout=60)
        ready_s = round(time.perf_counter() - began, 2)
        time.sleep(FOOTPRINT_IDLE_S)
        pids = tree(pid_of(worker))
        processes = []
        for pid in pids:
            rss = _proc_mb(pid, "VmRSS")
            if rss is None:
                continue
            argv_of = cmdline(pid)
            processes.append(
                {
                    "pid": pid,
                    "role": "main" if pid == pids[0] else "child",
                    "rss_mb": rss,
                    "pss_mb": _proc_mb(pid, "Pss"),
                    "cmd": " ".join(argv_of[1:4]) if argv_of else "?",
                }
            )
    finally:
        worker.stop()
    return {"ready_s": ready_s, "processes": processes}


def scenario_footprint(ctx: Context) -> dict[str, Any]:
    """Spawn -> Celery's " ready." line, then each process's RSS after 3 s idle; 3 starts each."""
    runs = []
    for queues, extra in FOOTPRINT_WORKERS:
        starts = [_footprint_once(ctx, queues, extra, n) for n in range(3)]
        last = starts[-1]
        max_rss = max(p["rss_mb"] for p in last["processes"])
        ready = sorted(s["ready_s"] for s in starts)
        run: dict[str, Any] = {
            "run": f"asyncml worker --queues {queues} {' '.join(extra)}".strip(),
            "engine": "rabbitmq+redis",
            "ready_s": [s["ready_s"] for s in starts],
            "processes": last["processes"],
            "rss_mb_total": round(sum(p["rss_mb"] for p in last["processes"]), 1),
            "pss_mb_total": round(sum(p["pss_mb"] or 0 for p in last["processes"]), 1),
        }
        target(
            run,
            f"start-up (median of 3) <= {FOOTPRINT_START_S:g} s",
            ready[1],
            FOOTPRINT_START_S,
            at_most=True,
        )
        target(
            run,
            f"RSS of each process <= {FOOTPRINT_RSS_MB:g} MB",
            max_rss,
            FOOTPRINT_RSS_MB,
            at_most=True,
        )
        runs.append(run)
    return {"runs": runs, "custom_table": "footprint"}


def _footprint_table(outcome: dict[str, Any]) -> Table:
    table = Table(title="footprint", title_justify="left")
    for column in ("worker", "spawn -> ready s", "process", "RSS MB (PSS)", "targets"):
        table.add_column(column, justify="left" if column in ("worker", "process") else "right")
    for run in outcome["runs"]:
        verdicts = "; ".join(
            f"{t['result']} {t['target']} ({t['value']})" for t in run.get("targets", [])
        )
        for i, proc in enumerate(run["processes"]):
            table.add_row(
                run["run"] if i == 0 else "",
                ", ".join(f"{v:.2f}" for v in run["ready_s"]) if i == 0 else "",
                f"{proc['role']} {proc['pid']}",
                f"{proc['rss_mb']:.0f} ({proc['pss_mb'] or 0:.0f})",
                verdicts if i == 0 else "",
            )
        table.add_row("", "", "total", f"{run['rss_mb_total']:.0f} ({run['pss_mb_total']:.0f})", "")
    return table


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "ceilings": scenario_ceilings,
    "embedded": scenario_embedded,
    "rabbitmq+redis": scenario_rabbitmq_redis,
    "euro": scenario_euro,
    "audio": scenario_audio,
    "footprint": scenario_footprint,
    "models": scenario_models,
}
ALIASES = {"overhead": ["embedded", "rabbitmq+redis"]}


# --- output -------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(run: dict[str, Any], label: str) -> str:
    figures = run.get(f"vs_{label}")
    if not figures:
        return "-"
    p50 = figures["latency_p50_x"]
    return f"{figures['tasks_per_s']:.1%}, {'-' if p50 is None else f'{p50}x'}"


def _rows(run: dict[str, Any]) -> list[tuple[str, str]]:
    lat, sub = run["latency_ms"], run["submit_ms"]
    rows = [
        ("engine", run["engine"]),
        ("tasks ok / submitted", f"{run['succeeded']} / {run['submitted']} ({run['stopped_by']})"),
        ("tasks/s, first submit to last result", _num(run["tasks_per_s"])),
        ("submits/s", _num(run["submits_per_s"])),
        ("latency p50 / p90 / p99 / max ms", " / ".join(_ms(lat[k]) for k in lat)),
        ("submit request p50 / p99 ms", f"{_ms(sub['p50'])} / {_ms(sub['p99'])}"),
        ("errors", ", ".join(f"{k} {v}" for k, v in run["errors"].items()) or "0"),
    ]
    parts = run.get("breakdown_ms", {})
    if any(p["p50"] is not None for p in parts.values()):
        rows.append(
            (
                "p50 ms: queued / running / until seen",
                " / ".join(_ms(parts[k]["p50"]) for k in ("queue_wait", "run", "after_finish")),
            )
        )
    for role, p in run["processes"].items():
        rows.append(
            (
                f"{role}: CPU s (ms/task), peak RSS MB",
                f"{p['cpu_s']:.1f} ({p['cpu_ms_per_task']:.2f}), {p['peak_rss_mb']:.0f}"
                f" in {p['processes']}",
            )
        )
    if run.get("broker_queues"):
        rows.append(("RabbitMQ queue: ready, unacked, consumers", run["broker_queues"]))
    bound = " (bound: the figure is the generator's)" if run["loadgen_bound"] else ""
    rows.append(("load generator CPU s", f"{run['loadgen_cpu_s']:.1f}{bound}"))
    if run.get("batch_size"):
        sizes = run["batch_size"]
        rows.append(
            (
                "batch_size mean / p50 / p90 / max",
                f"{sizes['mean']} / {sizes['p50']:.0f} / {sizes['p90']:.0f} / {sizes['max']:.0f}",
            )
        )
    if run.get("vs_in_process"):
        vs = run["vs_in_process"]
        rows.append(
            ("vs in-process: one row, batched", f"{vs['one_row']:.1%}, {vs['batched']:.1%}")
        )
    for entry in run.get("targets", []):
        value = entry["value"]
        shown = "-" if value is None else f"{value:.3g}"
        rows.append(
            (
                f"target: {entry['target']}",
                f"{entry['result']} ({shown} {entry['op']} {entry['limit']:g})",
            )
        )
    for label in ("http_ceiling", "engine_ceiling"):
        if f"vs_{label}" in run:
            rows.append((f"vs {label.replace('_', ' ')}: tasks/s, p50", _ratio(run, label)))
    return rows


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_table(scenario: str, outcome: dict[str, Any]) -> None:
    if outcome.get("custom_table") == "footprint":
        console.print(_footprint_table(outcome))
        return
    table = Table(title=scenario, title_justify="left")
    table.add_column("")
    per_run = [dict(_rows(run)) for run in outcome["runs"]]
    labels: list[str] = []
    for rows in per_run:
        labels += [label for label in rows if label not in labels]
    for run in outcome["runs"]:
        table.add_column(run["run"], justify="right")
    for label in labels:
        table.add_row(label, *(rows.get(label, "") for rows in per_run))
    console.print(table)
    if outcome.get("note"):
        console.print(f"note: {outcome['note']}")
    for problem in outcome.get("problems", []):
        console.print(f"problem: {problem}")
    if outcome.get("redis_benchmark"):
        figures = ", ".join(f"{k} {v:.0f}" for k, v in outcome["redis_benchmark"].items())
        console.print(f"redis-benchmark (-c {CONCURRENCY}): {figures}")


@contextlib.contextmanager
def _context(keep: Path | None) -> Iterator[Context]:
    with contextlib.ExitStack() as stack:
        if keep is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncml-bench-"))
            )
        else:
            workdir = keep.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        ctx = Context(workdir)
        with ctx.fixtures:
            try:
                yield ctx
            finally:
                ctx.infra.close()


def main(argv: list[str] | None = None) -> int:
    global CONCURRENCY, DEADLINE_S  # the run's bounds, read by every scenario
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenarios", nargs="*", help=f"any of {', '.join([*SCENARIOS, *ALIASES])}; default: all"
    )
    parser.add_argument(
        "--no-ceilings", action="store_true", help="skip the ceilings (ratios are then null)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep logs and data here instead of a temporary folder"
    )
    parser.add_argument(
        "--engine",
        choices=["rabbitmq+redis", "embedded"],
        default="rabbitmq+redis",
        help="engine of the euro and audio scenarios (default: rabbitmq+redis, the "
        "production shape)",
    )
    parser.add_argument(
        "--clients", type=int, default=CONCURRENCY, help=f"closed-loop clients ({CONCURRENCY})"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEADLINE_S,
        help=f"wall-clock cap of one measured run ({DEADLINE_S:g}); at most 60",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 1 <= args.seconds <= 60:
        parser.error("--clients must be 1-256 and --seconds 1-60: runs stay bounded")
    CONCURRENCY, DEADLINE_S = args.clients, args.seconds
    chosen: list[str] = []
    for name in args.scenarios or list(SCENARIOS):
        if name not in SCENARIOS and name not in ALIASES:
            parser.error(f"unknown scenario {name!r}")
        for one in ALIASES.get(name, [name]):
            if one not in chosen:
                chosen.append(one)
    if not args.no_ceilings and "ceilings" not in chosen:
        chosen.insert(0, "ceilings")
    elif "ceilings" in chosen:
        chosen.remove("ceilings")
        chosen.insert(0, "ceilings")
    console.print(
        f"machine: {machine()}; {CONCURRENCY} clients, closed loop, at most {COUNT} tasks "
        f"or {DEADLINE_S:.0f} s per run; {WORKER_CONCURRENCY} worker processes"
    )
    started_at = time.monotonic()
    with _context(args.workdir) as ctx:
        ctx.engine = args.engine
        for name in chosen:
            began = time.monotonic()
            outcome = SCENARIOS[name](ctx)
            line = {"scenario": name, "machine": machine(), **outcome}
            line["load"] = {
                "clients": CONCURRENCY,
                "max_tasks": COUNT,
                "seconds": DEADLINE_S,
                "worker_processes": WORKER_CONCURRENCY,
            }
            line["scenario_s"] = round(time.monotonic() - began, 1)
            print(json.dumps(line), flush=True)
            print_table(name, outcome)
    console.print(f"all scenarios: {time.monotonic() - started_at:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
