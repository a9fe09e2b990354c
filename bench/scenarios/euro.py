"""`euro.results` against the bench's local results page: uncached, then cached."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from stack import started

from .context import Context
from .measure import closed_loop, measure, target, warm


def run(ctx: Context) -> dict[str, Any]:
    """Uncached dates (one page fetched and parsed each), then the same dates again, cached."""
    dates = draw_dates()
    runs = []
    with started(ctx.stack(ctx.engine, _euro_env(ctx))) as stack:
        warm(stack, "euro.results", lambda i: {"draw_date": dates[-1 - i]}, 8)
        fresh = dates[: len(dates) - 8]
        hits_before = ctx.sources.hits
        uncached = measure(
            stack,
            closed_loop(
                stack,
                "euro.results",
                lambda i: {"draw_date": fresh[i]},
                replace(ctx.bounds, max_tasks=len(fresh)),
            ),
            name="euro.results uncached (local page)",
            engine=stack.engine,
            kind="euro.results",
        )
        uncached["source_requests"] = ctx.sources.hits - hits_before
        done = uncached["submitted"]
        hits_before = ctx.sources.hits
        cached = measure(
            stack,
            closed_loop(
                stack, "euro.results", lambda i: {"draw_date": fresh[i % done]}, ctx.bounds
            ),
            name="euro.results cached (same dates again)",
            engine=stack.engine,
            kind="euro.results",
        )
        cached["source_requests"] = ctx.sources.hits - hits_before
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


def draw_dates() -> list[str]:
    """Every Tuesday and Friday draw from 10-05-2011 to the end of 2025, as DD-MM-YYYY."""
    day, end, dates = date(2011, 5, 10), date(2025, 12, 31), []
    while day <= end:
        if day.weekday() in (1, 4):
            dates.append(day.strftime("%d-%m-%Y"))
        day += timedelta(days=1)
    return dates


def _euro_env(ctx: Context) -> dict[str, str]:
    return {
        "ASYNCML_EURO_RESULTS_URL": f"{ctx.sources.url}/results/{{date}}",
        # The local fixture is the source: no politeness owed, so no shared schedule.
        "ASYNCML_EURO_RATE_PER_S": "100",  # the most the setting allows
    }
