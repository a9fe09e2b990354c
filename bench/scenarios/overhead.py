"""The overhead scenario on each engine: `debug.echo`, the platform's own cost per task.

`debug.echo` (served with ASYNCML_DEBUG_KINDS=true) does no I/O and caches nothing. A run
is submit + long-poll, then `Prefer: wait=10`, a burst, and the open loop at 25 % of the
first run's tasks/s for issue #7's latency target.

The embedded engine is measured as `make run` starts it (issue #19): `asyncml up` with no
option, so a worker process per CPU and the bundled models' own worker, which polls the
same SQLite file; `model.iris` is then measured on the same stack.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from procstats import Meter, _cpu_ticks, cmdline, tree
from stack import (  # ServiceProcess, wait_until_ready: the test helpers stack.py puts on the path
    ServiceProcess,
    Stack,
    _classify_up,
    bench_service_env,
    pid_of,
    started,
    wait_until_ready,
)

from .ceilings import celery_noop_ceiling
from .context import Context
from .measure import closed_loop, measure, open_loop, ratios, target, target_entry, warm
from .models import IRIS_ROW

# Burst runs submit everything, then wait: sized so the backlog drains in about 15 s.
BURST_COUNT = {"embedded": 300, "rabbitmq+redis": 1500}
# Issue #7: p50 submit -> result seen at 25 % of the closed-loop throughput.
LATENCY_25_LIMIT_MS = {"embedded": 100.0, "rabbitmq+redis": 15.0}


# `make run` is `asyncml up` with no option: a worker per CPU, the bundled models served by
# a models worker of their own. Only the guards that would shape the load are lifted, and
# the debug kinds turned on (debug.echo).
MAKE_RUN_ENV = {"ASYNCML_MODELS_BUNDLED": "true"}
UP_WORKERS = 2  # `up` starts the prefork worker and the models worker, each printing " ready."
IDLE_WINDOW_S = 20.0
# Issue #19: on RabbitMQ + Redis, debug.echo's tasks/s as a share of the Celery no-op
# ceiling's, the median of ROUNDS rounds each against its own ceiling run.
ROUNDS = 3
POLLED_SHARE = 0.5
WAITED_SHARE = 0.6
IDLE_SETTLE_S = 5.0


class MakeRunStack(Stack):
    """`asyncml up` exactly as `make run` starts it (every worker, the bundled models)."""

    engine = "embedded"

    def __init__(self, workdir: Path) -> None:
        port, env = bench_service_env(workdir, MAKE_RUN_ENV)
        self.base_url = f"http://127.0.0.1:{port}"
        self.up = ServiceProcess("up", ["up"], env=env, workdir=workdir).start()
        self.processes = [self.up]
        try:
            _wait_for_lines(self.up, " ready.", UP_WORKERS, timeout=90)
            wait_until_ready(self.base_url, self.up)
        except BaseException:
            self.up.stop()
            raise

    def meter(self) -> Meter:
        return Meter({"service": pid_of(self.up)}, classify=_classify_up)

    def stop(self) -> None:
        self.up.stop()

    def idle_cpu(self, window_s: float = IDLE_WINDOW_S) -> dict[str, Any]:
        """CPU of every process of the tree over `window_s` with nothing to do, in % of a core."""
        root = pid_of(self.up)
        pids = tree(root)
        before = {pid: _cpu_ticks(pid) for pid in pids}
        began = time.monotonic()
        time.sleep(window_s)  # the idle window is what is measured, not a wait for an event
        wall = time.monotonic() - began
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        processes = []
        for pid in pids:
            start, end = before[pid], _cpu_ticks(pid)
            if start is None or end is None:
                continue
            argv = cmdline(pid)
            processes.append(
                {
                    "pid": pid,
                    "cmd": " ".join(argv[2:6]) if len(argv) > 2 else "?",
                    "cpu_pct": round(100 * (end - start) / ticks_per_s / wall, 2),
                }
            )
        total = round(sum(p["cpu_pct"] for p in processes), 2)
        return {"window_s": round(wall, 1), "cpu_pct_total": total, "processes": processes}


def _wait_for_lines(process: ServiceProcess, needle: str, count: int, timeout: float) -> None:
    """Until `count` lines hold `needle` (each worker of `up` prints its own " ready.")."""
    deadline = time.monotonic() + timeout
    cond = process._cond  # the helper's own condition, notified on every line it reads
    with cond:
        while sum(needle in line for line in process._lines) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.proc is None or process.proc.poll() is not None:
                raise RuntimeError(
                    f"{process.name}: {count} x {needle!r} not seen:\n{process.tail()}"
                )
            cond.wait(min(remaining, 0.5))


def run_embedded(ctx: Context) -> dict[str, Any]:
    return _overhead(ctx, "embedded")


def run_rabbitmq_redis(ctx: Context) -> dict[str, Any]:
    return _overhead(ctx, "rabbitmq+redis")


def _make_input(i: int) -> dict[str, Any]:
    return {"payload": {"i": i}}


def _iris_input(_i: int) -> dict[str, Any]:
    return dict(IRIS_ROW)


def _overhead(ctx: Context, engine: str) -> dict[str, Any]:
    if engine == "embedded":  # what a user gets from `make run`, bundled model included
        stack: Stack = MakeRunStack(Path(tempfile.mkdtemp(prefix="embedded-", dir=ctx.workdir)))
    else:
        stack = ctx.stack(engine, {})
    model_runs: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}
    with started(stack):
        warm(stack, "debug.echo", _make_input, 40)
        if engine == "rabbitmq+redis":
            rounds, outcome = _rounds_beside_the_ceiling(ctx, stack)
            polled, waited = outcome.pop("medians")
        else:
            rounds = []
            polled, waited = _closed_loops(stack, engine, ctx, "")
        # Issue #7: p50 at a load of 25 % of the closed-loop throughput measured just before
        # (on RabbitMQ + Redis, the median round's).
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
                open_loop(stack, "debug.echo", _make_input, rate_per_s=rate, prefer_wait_s=prefer),
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
            closed_loop(
                stack,
                "debug.echo",
                _make_input,
                replace(ctx.bounds, max_tasks=BURST_COUNT[engine]),
                burst=True,
                drain_s=30,
            ),
            name=f"overhead, burst of {BURST_COUNT[engine]}: submit all, then wait",
            engine=engine,
            kind="debug.echo",
            burst=True,
        )
        if engine == "embedded":  # the bundled model, through the models worker `up` starts
            warm(stack, "model.iris", _iris_input, 40)
            for prefer, label in ((0, "submit, then long-poll"), (10, "Prefer: wait=10")):
                model_runs.append(
                    measure(
                        stack,
                        closed_loop(
                            stack, "model.iris", _iris_input, ctx.bounds, prefer_wait_s=prefer
                        ),
                        name=f"model.iris on asyncml up: {label}",
                        engine=engine,
                        kind="model.iris",
                    )
                )
    ctx.with_ratios(burst)
    if rounds:  # each run with its own round's ceiling ratio, set there
        # Issue #7: a burst's throughput too, against the rounds' median ceiling.
        ratios(burst, outcome.pop("median_ceiling"), "engine_ceiling")
        share = (burst.get("vs_engine_ceiling") or {}).get("tasks_per_s")
        target(burst, "tasks/s / engine ceiling >= 0.5", share, 0.5, at_most=False)
        runs = [*rounds, burst]
    else:
        runs = [ctx.with_ratios(polled), ctx.with_ratios(waited), burst]
    runs += [ctx.with_ratios(run) for run in quarter]
    runs += [ctx.with_ratios(run) for run in model_runs]
    return {"runs": runs, **outcome}


def _closed_loops(
    stack: Stack, engine: str, ctx: Context, suffix: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """debug.echo's two closed loops: submit + long-poll, then `Prefer: wait=10`."""
    polled = measure(
        stack,
        closed_loop(stack, "debug.echo", _make_input, ctx.bounds),
        name=f"overhead (debug.echo): submit, then long-poll{suffix}",
        engine=engine,
        kind="debug.echo",
    )
    waited = measure(
        stack,
        closed_loop(stack, "debug.echo", _make_input, ctx.bounds, prefer_wait_s=10),
        name=f"overhead, submit with Prefer: wait=10{suffix}",
        engine=engine,
        kind="debug.echo",
    )
    return polled, waited


def _rounds_beside_the_ceiling(
    ctx: Context, stack: Stack
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Issue #19's overhead target, measured so that the machine's drift cancels out.

    On this 2-core VM the Celery no-op ceiling moved from 272 to 587 tasks/s between runs
    minutes apart, more than the service moves: a ratio to a ceiling measured once, at the
    start of the invocation, measured the drift. So ROUNDS rounds run back to back, each a
    ceiling run then the service's two closed loops, each ratio is taken against its own
    round's ceiling, and the target is checked on the median of the rounds (with the
    spread). The runs whose ratio is the median stand for the rest of the scenario."""
    runs: list[dict[str, Any]] = []
    ceilings: list[dict[str, Any]] = []
    shares: dict[str, list[tuple[float, dict[str, Any]]]] = {"polled": [], "waited": []}
    with celery_noop_ceiling(ctx) as ceiling_run:
        for k in range(1, ROUNDS + 1):
            suffix = f", round {k} of {ROUNDS}"
            ceiling = ceiling_run(f"engine ceiling (Celery no-op round trip){suffix}")
            polled, waited = _closed_loops(stack, "rabbitmq+redis", ctx, suffix)
            runs.append(ceiling)
            if ceiling.get("tasks_per_s"):
                ceilings.append(ceiling)
            for label, run in (("polled", polled), ("waited", waited)):
                ctx.with_ratios(run)
                ratios(run, ceiling, "engine_ceiling")  # this round's, not the first one's
                runs.append(run)
                share = (run["vs_engine_ceiling"] or {}).get("tasks_per_s")
                if share is not None:  # a round whose ceiling failed has no ratio
                    shares[label].append((share, run))
    if not ceilings or not shares["polled"] or not shares["waited"]:
        raise RuntimeError(f"overhead rounds: no ratio to the ceiling in {ROUNDS} rounds")
    ceilings.sort(key=lambda run: run["tasks_per_s"])
    targets, spread, medians = [], {}, []
    for label, name, limit in (
        ("polled", "submit + long-poll", POLLED_SHARE),
        ("waited", "Prefer: wait", WAITED_SHARE),
    ):
        ordered = sorted(shares[label], key=lambda pair: pair[0])
        median_share, median_run = ordered[(len(ordered) - 1) // 2]  # the lower, if even
        medians.append(median_run)
        values = [share for share, _ in shares[label]]
        spread[label] = {"median": median_share, "min": min(values), "max": max(values)}
        entry = target_entry(
            f"{name}: median tasks/s / same-round engine ceiling >= {limit}",
            median_share,
            limit,
            at_most=False,
        )
        targets.append({**entry, "values": values})
    return runs, {
        "medians": tuple(medians),
        "median_ceiling": ceilings[(len(ceilings) - 1) // 2],
        "vs_engine_ceiling_rounds": spread,
        "targets": targets,
    }
