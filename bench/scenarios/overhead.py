"""The overhead scenario on each engine: `debug.echo`, the platform's own cost per task.

`debug.echo` (served with ASYNCML_DEBUG_KINDS=true) does no I/O and caches nothing. A run
is submit + long-poll, then `Prefer: wait=10`, a burst, and the open loop at 25 % of the
first run's tasks/s for issue #7's latency target.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from stack import started

from .context import Context
from .measure import closed_loop, measure, open_loop, target, warm

# Burst runs submit everything, then wait: sized so the backlog drains in about 15 s.
BURST_COUNT = {"embedded": 300, "rabbitmq+redis": 1500}
# Issue #7: p50 submit -> result seen at 25 % of the closed-loop throughput.
LATENCY_25_LIMIT_MS = {"embedded": 100.0, "rabbitmq+redis": 15.0}


def run_embedded(ctx: Context) -> dict[str, Any]:
    return _overhead(ctx, "embedded")


def run_rabbitmq_redis(ctx: Context) -> dict[str, Any]:
    return _overhead(ctx, "rabbitmq+redis")


def _make_input(i: int) -> dict[str, Any]:
    return {"payload": {"i": i}}


def _overhead(ctx: Context, engine: str) -> dict[str, Any]:
    with started(ctx.stack(engine, {})) as stack:
        warm(stack, "debug.echo", _make_input, 40)
        polled = measure(
            stack,
            closed_loop(stack, "debug.echo", _make_input, ctx.bounds),
            name="overhead (debug.echo): submit, then long-poll",
            engine=engine,
            kind="debug.echo",
        )
        waited = measure(
            stack,
            closed_loop(stack, "debug.echo", _make_input, ctx.bounds, prefer_wait_s=10),
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
    runs = [ctx.with_ratios(polled), ctx.with_ratios(waited), ctx.with_ratios(burst)]
    runs += [ctx.with_ratios(run) for run in quarter]
    if engine == "rabbitmq+redis":  # issue #7: throughput >= 50 % of the engine ceiling
        for run in (polled, waited, burst):
            share = (run.get("vs_engine_ceiling") or {}).get("tasks_per_s")
            target(run, "tasks/s / engine ceiling >= 0.5", share, 0.5, at_most=False)
    return {"runs": runs}
