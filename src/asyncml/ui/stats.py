"""The overview's figures, from the store's finished index: per minute over the last hour,
tasks finished and the p50/p95 of run time and queue wait; failures by error type."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from asyncml.store.history import FinishedTask

MINUTES = 60


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Overview:
    minutes: list[int] = field(default_factory=list)  # epoch seconds of each minute's start
    finished: list[int] = field(default_factory=list)
    run_p50: list[float | None] = field(default_factory=list)
    run_p95: list[float | None] = field(default_factory=list)
    wait_p50: list[float | None] = field(default_factory=list)
    wait_p95: list[float | None] = field(default_factory=list)
    by_status: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    run_hour_p50: float | None = None
    run_hour_p95: float | None = None
    wait_hour_p50: float | None = None
    wait_hour_p95: float | None = None

    def chart_data(self) -> dict[str, Any]:
        """What static/overview.js draws (uPlot's columns: x first)."""
        return {
            "x": self.minutes,
            "finished": self.finished,
            "run": [self.run_p50, self.run_p95],
            "wait": [self.wait_p50, self.wait_p95],
        }


def overview(finished: list[FinishedTask], now: float) -> Overview:
    """Bucket the tasks finished in the ``MINUTES`` minutes before ``now``."""
    end = int(now // 60) * 60 + 60
    start = end - MINUTES * 60
    runs: list[list[float]] = [[] for _ in range(MINUTES)]
    waits: list[list[float]] = [[] for _ in range(MINUTES)]
    counts = [0] * MINUTES
    result = Overview()
    for task in finished:
        if not start <= task.finished_at < end:
            continue
        slot = int((task.finished_at - start) // 60)
        counts[slot] += 1
        result.by_status[task.status] += 1
        if task.status == "FAILURE":
            result.failures[task.error_type or "unknown"] += 1
        if task.run_s is not None and task.status != "CANCELLED":
            runs[slot].append(task.run_s)
        if task.wait_s is not None:
            waits[slot].append(task.wait_s)
    result.minutes = [start + 60 * i for i in range(MINUTES)]
    result.finished = counts
    result.run_p50 = [percentile(r, 0.5) for r in runs]
    result.run_p95 = [percentile(r, 0.95) for r in runs]
    result.wait_p50 = [percentile(w, 0.5) for w in waits]
    result.wait_p95 = [percentile(w, 0.95) for w in waits]
    all_runs = [v for r in runs for v in r]
    all_waits = [v for w in waits for v in w]
    result.run_hour_p50, result.run_hour_p95 = percentile(all_runs, 0.5), percentile(all_runs, 0.95)
    result.wait_hour_p50 = percentile(all_waits, 0.5)
    result.wait_hour_p95 = percentile(all_waits, 0.95)
    return result
