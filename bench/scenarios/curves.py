"""Issue #19 item 4: curves, not points, on RabbitMQ + Redis and on the embedded engine.

`debug.echo`, submit + long-poll. For each engine: tasks/s against worker processes (1, 2,
4) with one API process, and against API processes (1, 2: ASYNCML_API_PROCESSES, which
`asyncml api` and `asyncml up` read) with 2 workers; then, on the 2-worker stack with one
API process, p50/p95 against offered load, open loop from 10 % to 100 % of that stack's own
peak. Every point is in the JSON line; the plots go to
bench/plots/ (matplotlib, from the bench dependency group).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from loadgen import Route, run_route_load, run_route_open
from procstats import Meter
from stack import (
    BENCH_DIR,
    _classify_up,
    bench_service_env,
    pid_of,
    worker_process,
)

from .context import Context
from .peers import Served, closed_loop, measure_run

WORKERS = (1, 2, 4)
API_PROCESSES = (1, 2)
LOAD_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
ENGINES = ("rabbitmq+redis", "embedded")
ECHO = Route("asyncml", "debug.echo")
PLOTS = BENCH_DIR / "plots"


def _echo(i: int) -> dict[str, Any]:
    return {"payload": {"i": i}}


def our_service(
    ctx: Context,
    engine: str,
    *,
    workers: int | None,
    api_processes: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Served:
    """The service with `workers` worker processes (None: no worker at all, for a backlog)
    and `api_processes` API processes, on `engine`; `start_workers` adds the worker later.

    Embedded with workers is `asyncml up --concurrency N` (the supervisor, as users run it);
    embedded without is `asyncml api` alone on the same data folder, the worker added later.
    """
    from processes import ServiceProcess, wait_until_ready  # tests/integration, via stack

    workdir = Path(tempfile.mkdtemp(prefix=f"curves-{engine}-", dir=ctx.workdir))
    infra = ctx.infra if engine == "rabbitmq+redis" else None
    extra = {**(extra_env or {}), "ASYNCML_API_PROCESSES": str(api_processes)}
    port, env = bench_service_env(workdir, extra, infra)
    base_url = f"http://127.0.0.1:{port}"
    started: list[Any] = []

    def stop() -> None:
        for process in reversed(started):
            process.stop()

    def add_workers(n: int) -> ServiceProcess:
        args = ("--concurrency", str(n))
        process = worker_process("worker", "debug", args, env=env, workdir=workdir).start()
        started.append(process)
        process.wait_for_line(" ready.", timeout=60)
        return process

    try:
        if engine == "embedded" and workers is not None:
            up = ServiceProcess(
                "up", ["up", "--concurrency", str(workers)], env=env, workdir=workdir
            )
            started.append(up.start())
            wait_until_ready(base_url, up, timeout=90)
            return Served(
                base_url,
                lambda: Meter({"service": pid_of(up)}, classify=_classify_up),
                stop,
                workdir=workdir,
            )
        api_args = ["api", "--workers", str(api_processes)]
        api = ServiceProcess("api", api_args, env=env, workdir=workdir).start()
        started.append(api)
        if workers is not None:
            add_workers(workers)
        wait_until_ready(base_url, api, timeout=90)
    except BaseException:
        stop()
        raise

    def meter() -> Meter:
        roots = {"api": pid_of(api)}
        roots |= {f"workers{i or ''}": pid_of(p) for i, p in enumerate(started[1:])}
        return Meter(roots | (ctx.infra.pids() if infra is not None else {}))

    served = Served(base_url, meter, stop, workdir=workdir)
    served.start_workers = add_workers
    return served


def closed_run(ctx: Context, served: Served, name: str, **fields: Any) -> dict[str, Any]:
    return closed_loop(
        ctx, served, ECHO, _echo, ctx.bounds.clients, ctx.bounds.seconds, run=name, **fields
    )


def _warm(served: Served) -> None:
    warm = asyncio.run(
        run_route_load(served.base_url, ECHO, _echo, count=20, concurrency=4, deadline_s=60)
    ).summary()
    if warm["succeeded"] < 20:
        raise RuntimeError(f"warm-up of debug.echo: {warm['errors']}")


def run(ctx: Context) -> dict[str, Any]:
    points: list[dict[str, Any]] = []
    for engine in ENGINES:
        for workers in WORKERS:
            served = our_service(ctx, engine, workers=workers)
            try:
                _warm(served)
                point = closed_run(
                    ctx,
                    served,
                    f"{engine} {workers} worker processes, 1 API process",
                    curve="workers",
                    engine=engine,
                    workers=workers,
                    api_processes=1,
                )
                points.append(point)
                if workers == 2:
                    points += _latency_curve(ctx, served, engine, point["tasks_per_s"] or 1.0)
            finally:
                served.stop()
        for api_processes in API_PROCESSES[1:]:
            served = our_service(ctx, engine, workers=2, api_processes=api_processes)
            try:
                _warm(served)
                points.append(
                    closed_run(
                        ctx,
                        served,
                        f"{engine} 2 worker processes, {api_processes} API processes",
                        curve="api",
                        engine=engine,
                        workers=2,
                        api_processes=api_processes,
                    )
                )
            finally:
                served.stop()
    embedded_ceiling = getattr(ctx.ceilings, "embedded_engine", None)
    for point in points:
        ceiling = ctx.ceilings.engine if point["engine"] == "rabbitmq+redis" else embedded_ceiling
        if ceiling and ceiling.get("tasks_per_s") and point["curve"] != "latency":
            point["engine_ceiling_ratio"] = round(
                (point["tasks_per_s"] or 0.0) / ceiling["tasks_per_s"], 3
            )
    plots = plot(points)
    return {"runs": points, "plots": plots}


def _latency_curve(ctx: Context, served: Served, engine: str, peak: float) -> list[dict[str, Any]]:
    out = []
    for fraction in LOAD_FRACTIONS:
        rate = round(peak * fraction, 1)
        out.append(
            measure_run(
                served,
                lambda rate=rate: asyncio.run(  # type: ignore[misc]  # bound per point
                    run_route_open(
                        served.base_url,
                        ECHO,
                        _echo,
                        rate_per_s=rate,
                        duration_s=min(6.0, ctx.bounds.seconds),
                    )
                ),
                run=f"{engine} open loop at {fraction:.0%} of peak ({rate:g}/s)",
                curve="latency",
                engine=engine,
                workers=2,
                api_processes=1,
                open_loop={"rate_per_s": rate, "of_tasks_per_s": peak, "fraction": fraction},
            )
        )
    return out


def plot(points: list[dict[str, Any]]) -> list[str]:
    """bench/plots/curves_latency.png and curves_processes.png from the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for engine in ENGINES:
        mine = [p for p in points if p["engine"] == engine and p["curve"] == "latency"]
        if not mine:
            continue
        x = [p["open_loop"]["rate_per_s"] for p in mine]
        ax.plot(x, [p["latency_ms"]["p50"] for p in mine], "o-", label=f"{engine} p50")
        ax.plot(x, [p["latency_ms"]["p95"] for p in mine], "s--", label=f"{engine} p95")
    ax.set_xlabel("offered load, tasks/s (open loop, 10-100 % of the 2-worker peak)")
    ax.set_ylabel("submit -> result seen, ms")
    ax.set_yscale("log")
    ax.set_title("debug.echo latency against offered load")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = PLOTS / "curves_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path.relative_to(BENCH_DIR)))

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for engine in ENGINES:
        mine = [p for p in points if p["engine"] == engine and p["curve"] == "workers"]
        ax.plot(
            [p["workers"] for p in mine],
            [p["tasks_per_s"] for p in mine],
            "o-",
            label=f"{engine}, 1 API process",
        )
        apis = [p for p in points if p["engine"] == engine and p["curve"] == "api"]
        for p in apis:
            ax.plot(
                [p["workers"]], [p["tasks_per_s"]], "D", label=f"{engine}, {p['api_processes']} API"
            )
    ax.set_xlabel("worker processes")
    ax.set_ylabel("tasks/s (closed loop)")
    ax.set_xticks(list(WORKERS))
    ax.set_title("debug.echo throughput against processes (2 cores)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = PLOTS / "curves_processes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path.relative_to(BENCH_DIR)))
    return written


def table(outcome: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title="curves: debug.echo, submit + long-poll")
    for col in (
        "engine",
        "curve",
        "point",
        "tasks/s",
        "p50 / p95 ms",
        "CPU ms/task",
        "gen ms/task",
    ):
        t.add_column(col)
    for p in outcome["runs"]:
        where = (
            f"{p['open_loop']['fraction']:.0%} ({p['open_loop']['rate_per_s']:g}/s)"
            if p["curve"] == "latency"
            else f"{p['workers']} workers, {p['api_processes']} API"
        )
        t.add_row(
            p["engine"],
            p["curve"],
            where,
            f"{p['tasks_per_s']}",
            f"{p['latency_ms']['p50']} / {p['latency_ms']['p95']}",
            f"{p['cpu_ms_per_task']}",
            f"{p['loadgen_cpu_ms_per_task']}",
        )
    t.add_row("plots", "", ", ".join(outcome["plots"]), "", "", "", "")
    return t
