"""How one run is measured, and what its figures are compared with.

`measure` runs a load inside a meter's window and returns the run's figures; the loads are
`closed_loop` and `open_loop` (loadgen.py) within the run's `Bounds`; `target` records a
target of issues #7 and #10 on a run, `ratios` its share of a ceiling measured in the same
invocation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadgen import LoadResult, run_load, run_open_loop
from procstats import Meter, own_cpu_s
from stack import Stack

LOADGEN_BOUND = 0.85  # generator CPU / wall time above which a run measures the generator

MakeInput = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class Bounds:
    """The bounds of a closed-loop run: whichever of `max_tasks` and `seconds` comes first.

    The run's defaults come from the command line (--clients, --seconds); a scenario that
    needs other bounds for one run says so with `dataclasses.replace`.
    """

    clients: int = 16
    seconds: float = 15.0
    max_tasks: int = 5000


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


def closed_loop(
    stack: Stack,
    kind: str,
    make_input: MakeInput,
    bounds: Bounds,
    *,
    prefer_wait_s: int = 0,
    burst: bool = False,
    drain_s: float = 10.0,
) -> Callable[[], LoadResult]:
    """A closed-loop load (loadgen.run_load), or a burst, to hand to `measure`."""
    return lambda: asyncio.run(
        run_load(
            stack.base_url,
            kind,
            make_input,
            count=bounds.max_tasks,
            concurrency=bounds.clients,
            deadline_s=bounds.seconds,
            prefer_wait_s=prefer_wait_s,
            burst=burst,
            drain_s=drain_s,
        )
    )


def open_loop(
    stack: Stack,
    kind: str,
    make_input: MakeInput,
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


def warm(
    stack: Stack,
    kind: str,
    make_input: MakeInput,
    n: int,
    deadline_s: float = 60,
) -> None:
    """Run `n` tasks unmeasured: imports, connections, caches; fail loudly if they fail."""
    bounds = Bounds(clients=4, seconds=deadline_s, max_tasks=n)
    summary = closed_loop(stack, kind, make_input, bounds)().summary()
    if summary["succeeded"] != n:
        raise RuntimeError(f"warm-up of {kind} on {stack.engine}: {summary}")


def target_entry(name: str, value: float | None, limit: float, *, at_most: bool) -> dict[str, Any]:
    """One target's verdict: PASS when value <= (or >=) limit."""
    ok = value is not None and (value <= limit if at_most else value >= limit)
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "op": "<=" if at_most else ">=",
        "result": "PASS" if ok else "MISS",
    }


def target(
    run: dict[str, Any], name: str, value: float | None, limit: float, *, at_most: bool
) -> dict[str, Any]:
    """Record one target of issue #7/#10 on `run` (`target_entry`)."""
    entry = target_entry(name, value, limit, at_most=at_most)
    run.setdefault("targets", []).append(entry)
    return entry


def ratios(run: dict[str, Any], ceiling: dict[str, Any] | None, label: str) -> None:
    """`vs_<label>` on `run`: its tasks/s as a share of the ceiling's, its p50 as a multiple."""
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
