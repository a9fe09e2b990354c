"""Issue #19 item 1: the same work through the peers a user would pick instead, and through us.

Five systems, in turn (in rounds), on this machine and in one run, driven by the same
generator (loadgen.Route: each system's own way in): RabbitMQ + Redis (`asyncml api` +
`asyncml worker`, submit + long-poll), the embedded default exactly as `make run` starts it
(`asyncml up`, no options, bundled models on), BentoML's task endpoints (`@bentoml.task`:
submit, status every 5 ms, get), Ray Serve's asynchronous inference (its Celery task
consumer on the run's RabbitMQ and Redis: submit, status every 5 ms; ray_async_app.py) and
Ray Serve's HTTP deployments (one request held open; `@serve.batch` for the heavy model).
Each system's idle CPU is measured too: IDLE_WINDOW_S with nothing to do, once it is up.

Three workloads: an echo, `model.iris` from the same ONNX file, the heavy model (heavy_model.py)
with each system's batching. For each: the closed loop (`RUNS` runs, median and spread;
several generator processes), then the open loop at 25 % of that system's own median peak
for p50/p95. The runs go in rounds (see `run`): each system's runs are spread over the
whole scenario, as every other's. A peer that cannot install or start is recorded with its
error; the others run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadgen import LoadResult, Route, run_in_processes, run_route_load, run_route_open
from procstats import Meter, own_cpu_s
from stack import (
    BENCH_DIR,
    ROOT,
    BrokerStack,
    Stack,
    _classify_up,
    bench_service_env,
    clean_env,
    command_process,
    pid_of,
)

from .context import Context
from .overhead import IDLE_SETTLE_S, IDLE_WINDOW_S  # the footprint's idle window, as there
from .tables import console

RUNS = 3  # closed-loop runs per figure: the median and the spread are reported
LOADGEN_PROCESSES = 2  # one asyncio process tops out near a core; see loadgen.run_in_processes
CLIENTS = {"echo": 16, "iris": 16, "heavy": 64}  # heavy: enough clients to fill batches of 32
OPEN_FRACTION = 0.25
OPEN_SECONDS = 6.0
WARM_ATTEMPTS = 3  # warm-ups of 20 tasks, 5 s apart, before a workload counts as failed
IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
PEERS_DIR = BENCH_DIR / "peers"

# What each system's path guarantees: the table's columns next to its speed.
GUARANTEES = {
    "rabbitmq+redis": {
        "queue": "durable: RabbitMQ persistent messages, publisher confirms; records in "
        "Redis (AOF, fsync every second)",
        "survives_worker_kill": "yes: late ack, the message is redelivered",
    },
    "embedded": {
        "queue": "durable: one SQLite file (broker and records)",
        "survives_worker_kill": "yes: asyncml up restarts the worker and makes its "
        "unacknowledged messages visible again",
    },
    "bentoml": {
        "queue": "in memory: the task runs as a background task of the HTTP worker that "
        "took the submit; its result in that worker's local store",
        "survives_worker_kill": "no: the task dies with the worker",
    },
    "ray-serve-async": {
        "queue": "durable: Celery on the run's RabbitMQ (persistent messages, no publisher "
        "confirms); results in Redis",
        "survives_worker_kill": "yes: Ray's Celery adapter acks late and rejects on a lost "
        "worker, so the message is delivered again",
    },
    "ray-serve": {
        "queue": "none: a request held open until answered (HTTP deployment)",
        "survives_worker_kill": "no: the request fails; the client must resend it",
    },
}


def _heavy_row(i: int) -> list[float]:
    from heavy_model import N_FEATURES

    return [((i * 31 + j * 7) % 100) / 100 for j in range(N_FEATURES)]


def _workloads(system: str) -> dict[str, tuple[Route, Callable[[int], dict[str, Any]]]]:
    """Each workload's route and input on `system`: the same work in each system's shape."""
    if system in ("rabbitmq+redis", "embedded"):
        return {
            "echo": (Route("asyncml", "debug.echo"), lambda i: {"payload": {"i": i}}),
            "iris": (Route("asyncml", "model.iris"), lambda i: dict(IRIS_ROW)),
            "heavy": (
                Route("asyncml", "model.heavy"),
                lambda i: {f"f{j}": v for j, v in enumerate(_heavy_row(i))},
            ),
        }
    if system == "bentoml":
        return {
            "echo": (Route("bentoml", "echo"), lambda i: {"payload": {"i": i}}),
            "iris": (Route("bentoml", "iris_predict"), lambda i: dict(IRIS_ROW)),
            "heavy": (Route("bentoml", "heavy"), lambda i: {"rows": [_heavy_row(i)]}),
        }
    if system == "ray-serve-async":
        return {
            "echo": (Route("ray-async", "echo"), lambda i: {"payload": {"i": i}}),
            "iris": (Route("ray-async", "iris"), lambda i: dict(IRIS_ROW)),
            "heavy": (Route("ray-async", "heavy"), lambda i: {"row": _heavy_row(i)}),
        }
    return {
        "echo": (Route("sync", "/echo"), lambda i: {"payload": {"i": i}}),
        "iris": (Route("sync", "/iris"), lambda i: dict(IRIS_ROW)),
        "heavy": (Route("sync", "/heavy"), lambda i: {"row": _heavy_row(i)}),
    }


class Served:
    """A system under test: its URL, how to meter it, how to stop it (and, for a service
    started without workers, how to start them: the backlog scenario)."""

    def __init__(
        self,
        base_url: str,
        meter: Callable[[], Meter],
        stop: Callable[[], object],
        *,
        workdir: Path | None = None,
    ) -> None:
        self.base_url, self.meter, self.stop, self.workdir = base_url, meter, stop, workdir
        self.start_workers: Callable[[int], Any] | None = None


def _kill_leftovers(pids: list[int]) -> None:
    """SIGKILL what a peer's server started and left behind (by pid: ours, no broad kill)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _peer_process(
    name: str,
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    servers: dict[str, int] | None = None,
) -> Served:
    """The peer's server started; `servers` (label -> pid) are metered with it: the broker
    and store a peer runs on count in its CPU, as RabbitMQ and Redis count in ours."""
    from processes import descendants  # tests/integration, on sys.path via stack
    from services import free_ports

    (port,) = free_ports(1)
    argv = [a.replace("{port}", str(port)) for a in argv]
    process = command_process(name, argv, env=env, workdir=workdir)
    base_url = f"http://127.0.0.1:{port}"
    seen: set[int] = set()

    def meter() -> Meter:
        return Meter({"service": pid_of(process), **(servers or {})})

    def stop() -> None:
        seen.update(descendants(pid_of(process)))
        process.stop(timeout=20)
        _kill_leftovers(sorted(seen))

    try:
        if name.startswith("ray-serve"):
            process.wait_for_line(" ready.", timeout=240)
        else:
            from processes import wait_until_ready

            wait_until_ready(base_url, process, timeout=120)
        seen.update(descendants(pid_of(process)))
    except BaseException:
        stop()
        raise
    return Served(base_url, meter, stop)


def _start(ctx: Context, system: str, models_dir: Path, heavy_onnx: Path) -> Served:
    workdir = Path(tempfile.mkdtemp(prefix=f"peers-{system}-", dir=ctx.workdir))
    iris_onnx = ROOT / "src" / "asyncml" / "models" / "example" / "iris" / "model.onnx"
    env_models = {
        "ASYNCML_MODELS_BUNDLED": "true",
        "ASYNCML_MODELS_DIR": str(models_dir),
        "ASYNCML_MODELS_PRELOAD": "true",
    }
    if system == "rabbitmq+redis":
        stack: Stack = BrokerStack(
            workdir, ctx.infra, env_models, queues="debug", models_worker=True
        )
        return Served(stack.base_url, stack.meter, stack.stop)
    if system == "embedded":
        return _up_as_make_run(workdir, env_models)
    env = clean_env(
        PYTHONPATH=str(PEERS_DIR),
        BENCH_IRIS_ONNX=str(iris_onnx),
        BENCH_HEAVY_ONNX=str(heavy_onnx),
        BENTOML_DO_NOT_TRACK="True",
        BENTOML_HOME=str(workdir / "bentoml"),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # Ray on 127.0.0.1 only (see ray_app.py)
        # Ray Serve kills its HTTP proxy if it is not ready within 5 s of a check: on a
        # busy 2-core machine it can take longer to start ("killed by ray.kill").
        RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S="60",
        OMP_NUM_THREADS="1",
    )
    if system == "bentoml":
        argv = [sys.executable, "-m", "bentoml", "serve", "bento_service:Peers"]
        argv += ["--working-dir", str(PEERS_DIR), "--host", "127.0.0.1", "--port", "{port}"]
        return _peer_process("bentoml", argv, workdir, env)
    if system == "ray-serve-async":
        _, rabbitmq = ctx.infra.ensure()
        env["BENCH_RAY_BROKER_URL"] = rabbitmq.url
        env["BENCH_RAY_BACKEND_URL"] = ctx.infra.redis_url()
        argv = [sys.executable, str(PEERS_DIR / "ray_async_app.py"), "{port}"]
        return _peer_process("ray-serve-async", argv, workdir, env, ctx.infra.pids())
    argv = [sys.executable, str(PEERS_DIR / "ray_app.py"), "{port}"]
    return _peer_process("ray-serve", argv, workdir, env)


def _up_as_make_run(workdir: Path, env_models: dict[str, str]) -> Served:
    """`asyncml up` with no options, as `make run` starts it: every worker it starts."""
    from processes import ServiceProcess, wait_until_ready

    port, env = bench_service_env(workdir, env_models)
    up = ServiceProcess("up", ["up"], env=env, workdir=workdir).start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, up, timeout=90)
    except BaseException:
        up.stop()
        raise
    return Served(base_url, lambda: Meter({"service": pid_of(up)}, classify=_classify_up), up.stop)


def measure_run(served: Served, load: Callable[[], LoadResult], **fields: Any) -> dict[str, Any]:
    """One run: the system's CPU and RSS, the generator's CPU (every process of it)."""
    meter = served.meter()
    cpu_before = own_cpu_s()
    meter.start()
    result = load()
    processes = meter.stop()
    summary = result.summary()
    done = summary["succeeded"] or 1
    loadgen_cpu = own_cpu_s() - cpu_before + result.child_cpu_s
    service_cpu = sum(p["cpu_s"] for p in processes.values())
    return {
        **fields,
        **summary,
        "latency_ms": {**summary["latency_ms"], "p95": _p95(result)},
        "processes": processes,
        "cpu_ms_per_task": round(service_cpu * 1000 / done, 2),
        "rss_mb": round(sum(p["peak_rss_mb"] for p in processes.values()), 1),
        "loadgen_processes": result.processes,
        "loadgen_cpu_s": round(loadgen_cpu, 2),
        "loadgen_cpu_ms_per_task": round(loadgen_cpu * 1000 / done, 2),
        # Each generator process near a full core: the figure is the generator's.
        "loadgen_bound": loadgen_cpu >= 0.85 * summary["wall_s"] * result.processes,
    }


def _p95(result: LoadResult) -> float | None:
    latencies = sorted(
        (s.seen - s.submit_start) * 1000
        for s in result.samples
        if s.seen is not None and s.status == "SUCCESS"
    )
    if not latencies:
        return None
    return round(latencies[max(0, -(-95 * len(latencies) // 100) - 1)], 2)


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _closed_run(
    ctx: Context, system: str, served: Served, name: str, route: Route, make: Any, round_: int
) -> dict[str, Any]:
    """One closed-loop run of `name` on a freshly started `system` (after a warm-up)."""
    clients = CLIENTS[name]
    seconds = min(ctx.bounds.seconds, 8.0)
    for attempt in range(WARM_ATTEMPTS):
        warm = asyncio.run(
            run_route_load(served.base_url, route, make, count=20, concurrency=4, deadline_s=60)
        ).summary()
        if warm["succeeded"] == 20:
            break
        if attempt + 1 == WARM_ATTEMPTS:
            raise RuntimeError(f"warm-up of {name} on {system}: {warm['errors']}")
        # Ray Serve's proxy can answer 404 for a while after serve.run() returned (its
        # routes reach the proxy later): a just-started server, not a failure yet.
        console.print(f"peers: warm-up of {name} on {system}: {warm['errors']}; again in 5 s")
        time.sleep(5)
    run = f"{system} {name} closed loop {round_}/{RUNS}, {clients} clients"
    return closed_loop(ctx, served, route, make, clients, seconds, run=run)


def closed_loop(
    ctx: Context,
    served: Served,
    route: Route,
    make: Callable[[int], dict[str, Any]],
    clients: int,
    seconds: float,
    **fields: Any,
) -> dict[str, Any]:
    """`clients` closed-loop clients over LOADGEN_PROCESSES generator processes, measured."""

    def load(share: int, first: int) -> LoadResult:
        return asyncio.run(
            run_route_load(
                served.base_url,
                route,
                make,
                count=ctx.bounds.max_tasks,
                concurrency=share,
                deadline_s=seconds,
                first_index=first,
            )
        )

    return measure_run(served, lambda: run_in_processes(load, clients, LOADGEN_PROCESSES), **fields)


def _open_run(
    ctx: Context, served: Served, system: str, name: str, route: Route, make: Any, peak: float
) -> dict[str, Any]:
    """The open loop at OPEN_FRACTION of the system's own median peak: its p50/p95."""
    rate = round((peak or 1.0) * OPEN_FRACTION, 1)
    return measure_run(
        served,
        lambda: asyncio.run(
            run_route_open(
                served.base_url,
                route,
                make,
                rate_per_s=rate,
                duration_s=min(OPEN_SECONDS, ctx.bounds.seconds),
            )
        ),
        run=f"{system} {name} open loop at 25 % of its peak ({rate:g}/s)",
        open_loop={"rate_per_s": rate, "of_tasks_per_s": peak, "fraction": OPEN_FRACTION},
    )


def _row(
    system: str,
    name: str,
    route: Route,
    closed: list[dict[str, Any]],
    opened: dict[str, Any] | None,
) -> dict[str, Any]:
    """`closed`: at least one run; `opened`: None if the last round's open loop failed."""
    return {
        "system": system,
        "workload": name,
        "route": vars(route),
        "clients": CLIENTS[name],
        "closed_runs": len(closed),  # RUNS, less any round in which it failed
        "tasks_per_s": _spread([r["tasks_per_s"] or 0.0 for r in closed]),
        "p50_ms_at_25": None if opened is None else opened["latency_ms"]["p50"],
        "p95_ms_at_25": None if opened is None else opened["latency_ms"]["p95"],
        "cpu_ms_per_task": _spread([r["cpu_ms_per_task"] for r in closed]),
        "loadgen_cpu_ms_per_task": _spread([r["loadgen_cpu_ms_per_task"] for r in closed]),
        "rss_mb": max(r["rss_mb"] for r in closed),
        **GUARANTEES[system],
        "runs": [*closed, *([] if opened is None else [opened])],
    }


SYSTEMS = ("rabbitmq+redis", "embedded", "bentoml", "ray-serve-async", "ray-serve")
PEERS = ("bentoml", "ray-serve-async", "ray-serve")


def idle_cpu_pct(served: Served) -> float:
    """CPU of the system's processes over IDLE_WINDOW_S with nothing to do, in % of a core
    (after IDLE_SETTLE_S, so start-up's tail is not counted as idleness)."""
    time.sleep(IDLE_SETTLE_S)  # start-up's tail is not idleness; what follows is measured
    meter = served.meter()
    began = time.monotonic()
    meter.start()
    time.sleep(IDLE_WINDOW_S)  # the idle window is what is measured, not a wait for an event
    processes = meter.stop()
    wall = time.monotonic() - began
    return round(100 * sum(p["cpu_s"] for p in processes.values()) / wall, 2)


WORKLOADS = ("echo", "iris", "heavy")


def _chosen(variable: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """A subset named in ``variable`` (comma-separated), for a quick look at one pair:
    ``BENCH_PEERS_SYSTEMS=embedded,bentoml BENCH_PEERS_WORKLOADS=echo,iris``; all by default."""
    named = [n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()]
    unknown = sorted(set(named) - set(known))
    if unknown:
        raise ValueError(f"{variable}: unknown {unknown}; known: {list(known)}")
    return tuple(n for n in known if n in named) or known


def run(ctx: Context) -> dict[str, Any]:
    """`RUNS` rounds; in each, every system is started, runs one closed loop of every
    workload, and is stopped. A system's median is of runs spread over the whole scenario,
    as every other's: the machine's drift (this VM's rates move by 15 % and more within
    minutes) falls on all of them alike, not on whichever ran while it was slow. Idle CPU
    is measured in the first round, the open loop in the last (at 25 % of the median)."""
    import heavy_model

    models_dir = ctx.workdir / "peers-models"
    _, depth, row_ms = heavy_model.calibrated(models_dir / "heavy")
    heavy_onnx = models_dir / "heavy" / "model.onnx"
    failures: list[dict[str, str]] = []
    systems = _chosen("BENCH_PEERS_SYSTEMS", SYSTEMS)
    workloads = _chosen("BENCH_PEERS_WORKLOADS", WORKLOADS)
    closed: dict[tuple[str, str], list[dict[str, Any]]] = {}
    opened: dict[tuple[str, str], dict[str, Any]] = {}
    idle: dict[str, float | None] = {}
    never_started: set[str] = set()  # not tried again (a failed round of one that ran is)

    def failed(system: str, stage: str, exc: Exception) -> None:
        failures.append({"system": system, "stage": stage, "error": str(exc)[-2000:]})
        console.print(f"[red]peers: {system}, {stage}: {str(exc)[-600:]}[/red]")

    for round_ in range(1, RUNS + 1):
        for system in systems:
            if system in never_started:
                continue
            try:
                served = _start(ctx, system, models_dir, heavy_onnx)
            except Exception as exc:  # a peer that cannot run here: its error, the rest go on
                failed(system, f"start, round {round_}", exc)
                if round_ == 1:
                    never_started.add(system)
                continue
            try:
                if system not in idle:  # its first start
                    try:
                        idle[system] = idle_cpu_pct(served)
                    except Exception as exc:
                        failed(system, "idle CPU", exc)
                        idle[system] = None
                for name, (route, make) in _workloads(system).items():
                    if name not in workloads:
                        continue
                    try:
                        run = _closed_run(ctx, system, served, name, route, make, round_)
                        runs = closed.setdefault((system, name), [])
                        runs.append(run)
                        if round_ == RUNS:  # the rounds that ran it: its median
                            peak = statistics.median([r["tasks_per_s"] or 0.0 for r in runs])
                            opened[(system, name)] = _open_run(
                                ctx, served, system, name, route, make, peak
                            )
                    except Exception as exc:  # one workload failing leaves the others
                        failed(system, f"{name}, round {round_}", exc)
            finally:
                served.stop()
    rows = [
        {
            **_row(system, name, _workloads(system)[name][0], runs, opened.get((system, name))),
            "idle_cpu_pct": idle.get(system),
        }
        for (system, name), runs in closed.items()
    ]
    return {
        "rows": rows,
        "comparisons": comparisons(rows),
        "failures": failures,
        "rounds": RUNS,
        "heavy_model": {"depth": depth, "width": heavy_model.WIDTH, "one_row_ms": row_ms},
        "loadgen_processes": LOADGEN_PROCESSES,
        "runs": [run for row in rows for run in row["runs"]],
    }


def comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Us against each peer per workload, oriented so that >= 1.0 means we are ahead."""
    out = []
    by = {(r["system"], r["workload"]): r for r in rows}
    for (us, workload), mine in by.items():
        if us not in ("rabbitmq+redis", "embedded"):
            continue
        for peer in PEERS:
            theirs = by.get((peer, workload))
            if theirs is None:
                continue
            ours_tps, peer_tps = mine["tasks_per_s"]["median"], theirs["tasks_per_s"]["median"]
            ours_p50, peer_p50 = mine["p50_ms_at_25"], theirs["p50_ms_at_25"]
            out.append(
                {
                    "workload": workload,
                    "us": us,
                    "peer": peer,
                    "tasks_per_s_ratio": round(ours_tps / peer_tps, 2) if peer_tps else None,
                    "p50_ratio": round(peer_p50 / ours_p50, 2) if ours_p50 and peer_p50 else None,
                }
            )
    return out


def table(outcome: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title="peers: median of closed-loop runs [min-max]; p50/p95 at 25 % of own peak")
    columns = ("system", "work", "tasks/s", "p50/p95 ms", "CPU ms/task", "gen ms/task", "RSS MB")
    for col in (*columns, "idle CPU %"):
        t.add_column(col)
    t.add_column("queue")
    t.add_column("survives worker kill")
    for r in outcome["rows"]:
        tps, cpu, gen = r["tasks_per_s"], r["cpu_ms_per_task"], r["loadgen_cpu_ms_per_task"]
        t.add_row(
            r["system"],
            r["workload"],
            f"{tps['median']:g} [{tps['min']:g}-{tps['max']:g}]",
            f"{r['p50_ms_at_25']} / {r['p95_ms_at_25']}",
            f"{cpu['median']:g}",
            f"{gen['median']:g}",
            f"{r['rss_mb']:g}",
            f"{r.get('idle_cpu_pct', '-')}",
            r["queue"].split(":")[0],
            r["survives_worker_kill"].split(":")[0],
        )
    for c in outcome["comparisons"]:
        t.add_row(
            f"ratio {c['us']} vs {c['peer']}",
            c["workload"],
            f"{c['tasks_per_s_ratio']}",
            f"{c['p50_ratio']}",
            *([""] * 6),
        )
    for f in outcome["failures"]:
        t.add_row(f["system"], f["stage"], "FAILED", f["error"][-120:], *([""] * 6))
    return t
