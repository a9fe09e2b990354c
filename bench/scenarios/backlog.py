"""Issue #19 item 5: the cost of a growing backlog, on RabbitMQ + Redis and embedded.

With no worker running, `BACKLOG[engine]` `debug.echo` tasks are submitted by the closed
loop's clients (submit only); at each tenth of the backlog the submit rate of that tenth and
the store's size are recorded (Redis INFO `used_memory` of the whole server, which serves
only this stack then; the SQLite files with their WAL for the embedded engine). At the full
backlog: p50 of `GET /v1/tasks/{id}` (ids drawn across the backlog) and of `GET /v1/tasks`
(the first page). Then the worker starts (2 processes) and the backlog drains: the drain
rate is the backlog over the time until the last tenth of the tasks, long-polled in
submission order, are all final, against the same stack's closed loop run once drained,
and against the overhead scenario's tasks/s when it ran in the same invocation. The
store's bytes per finished task are read once drained.

Scaled with --seconds: the full sizes at the default 15 s, by (seconds / 15)² below (a
proof run at --seconds 3 queues 4,000 and 800).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

from loadgen import Client, Reply, percentiles

from .context import Context
from .curves import PLOTS, closed_run, our_service
from .peers import Served

BACKLOG = {"rabbitmq+redis": 100_000, "embedded": 20_000}
FULL_SECONDS = 15.0  # at --seconds below this, the backlog shrinks in proportion
TENTHS = 10
READS = 200  # GET /v1/tasks/{id} at the full backlog
LISTS = 50  # GET /v1/tasks at the full backlog
SUBMIT_CLIENTS = 16
DRAIN_DEADLINE_S = 900.0
WARM = 4 * SUBMIT_CLIENTS


async def _nothing(_tenth: int, _at: float) -> None:
    return None


def _store_bytes(ctx: Context, engine: str, served: Served) -> int:
    if engine == "rabbitmq+redis":
        redis, _ = ctx.infra.ensure()
        import redis as redis_py

        client = redis_py.Redis(host="127.0.0.1", port=redis.port)
        try:
            return int(client.info("memory")["used_memory"])
        finally:
            client.close()
    if served.workdir is None:
        raise RuntimeError("the embedded service's data folder is unknown")
    data = served.workdir / "data"
    return sum(p.stat().st_size for p in data.glob("*.sqlite3*") if p.is_file())


async def _submit_all(
    base_url: str, n: int, on_tenth: Any
) -> tuple[list[str], float, dict[str, int]]:
    """Submit `n` tasks from SUBMIT_CLIENTS clients: the ids in order, when the first
    submit went out (once every client exists: making them takes seconds here), errors."""
    ids: list[str | None] = [None] * n
    errors: dict[str, int] = {}
    next_index = completed = 0
    tenth = max(1, n // TENTHS)
    boundary = asyncio.Lock()

    async def client_loop(client: Client) -> None:
        nonlocal next_index, completed
        while next_index < n:
            index = next_index
            next_index += 1
            response = await client.post("/v1/tasks/debug.echo", json={"payload": {"i": index}})
            if response.status_code not in (200, 202):
                key = f"submit:http_{response.status_code}"
                errors[key] = errors.get(key, 0) + 1
                continue
            ids[index] = response.json()["id"]
            completed += 1  # in the order submits complete, not the order they were sent
            if completed % tenth == 0:
                k, at = completed // tenth, time.perf_counter()
                async with boundary:  # one store reading per tenth, while submits go on
                    await on_tenth(k, at)

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(base_url, timeout_s=60))
            for _ in range(SUBMIT_CLIENTS)
        ]
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for c in clients))
    return [i for i in ids if i is not None], started, errors


async def _read_latencies(base_url: str, ids: list[str]) -> dict[str, Any]:
    rng = random.Random(19)  # noqa: S311  # which ids to read back, not a secret
    by_id, listing = [], []
    async with Client(base_url, timeout_s=60) as client:
        for task_id in rng.sample(ids, min(READS, len(ids))):
            began = time.perf_counter()
            response = await client.get(f"/v1/tasks/{task_id}")
            by_id.append((time.perf_counter() - began) * 1000)
            _expect_ok(response, "GET /v1/tasks/{id}")
        for _ in range(LISTS):
            began = time.perf_counter()
            response = await client.get("/v1/tasks")
            listing.append((time.perf_counter() - began) * 1000)
            _expect_ok(response, "GET /v1/tasks")
    return {"get_task_ms": percentiles(by_id), "list_tasks_ms": percentiles(listing)}


def _expect_ok(response: Reply, what: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{what}: {response.status_code} {response.content[:200]!r}")


async def _wait_final(base_url: str, ids: list[str], deadline: float) -> int:
    """Long-poll each id in order until final; the number not final by `deadline`."""
    unfinished = 0
    async with Client(base_url, timeout_s=40) as client:
        for task_id in ids:
            status = None
            while status not in ("SUCCESS", "FAILURE", "CANCELLED"):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    unfinished += 1
                    break
                wait = max(1, min(30, int(remaining)))
                response = await client.get(f"/v1/tasks/{task_id}", params={"wait": wait})
                status = response.json().get("status")
    return unfinished


def _one_engine(ctx: Context, engine: str, n: int) -> dict[str, Any]:
    served = our_service(ctx, engine, workers=None)
    try:
        # Unmeasured first submits (connections, imports, first queries): in a proof run
        # they made the first tenth 2-3x slower than the rest. They drain with the backlog.
        warm_ids, _, _ = asyncio.run(_submit_all(served.base_url, WARM, _nothing))
        base = _store_bytes(ctx, engine, served)
        tenths: list[dict[str, Any]] = []

        async def on_tenth(k: int, at: float) -> None:
            tenths.append(
                {
                    "backlog": k * max(1, n // TENTHS),
                    "at_s": at,
                    "store_bytes": _store_bytes(ctx, engine, served) - base,
                }
            )

        ids, began, errors = asyncio.run(_submit_all(served.base_url, n, on_tenth))
        submitted_at = time.perf_counter()
        previous_at, previous_count = 0.0, 0
        tenths.sort(key=lambda row: row["backlog"])
        for row in tenths:
            row["at_s"] -= began
            row["submits_per_s"] = round(
                (row["backlog"] - previous_count) / max(1e-9, row["at_s"] - previous_at), 1
            )
            previous_at, previous_count = row["at_s"], row["backlog"]
            row["at_s"] = round(row["at_s"], 2)
        queued_bytes = _store_bytes(ctx, engine, served) - base
        reads = asyncio.run(_read_latencies(served.base_url, ids))
        if served.start_workers is None:
            raise RuntimeError("the service was started without a way to add its workers")
        drain_began = time.perf_counter()
        served.start_workers(2)
        ids = warm_ids + ids
        tail = ids[-max(1, len(ids) // TENTHS) :]
        unfinished = asyncio.run(_wait_final(served.base_url, tail, drain_began + DRAIN_DEADLINE_S))
        drain_s = time.perf_counter() - drain_began
        finished_bytes = _store_bytes(ctx, engine, served) - base
        # The same stack's closed loop once drained: the drain rate's reference in any
        # invocation (the overhead scenario's figure only when it ran in this one).
        closed = closed_run(ctx, served, f"{engine} after the drain: closed loop", engine=engine)
    finally:
        served.stop()
    first, last = tenths[0]["submits_per_s"], tenths[-1]["submits_per_s"]
    drain_tps = round(len(ids) / drain_s, 1)
    overhead = ctx.overhead_tps if engine == "rabbitmq+redis" else None
    return {
        "engine": engine,
        "backlog": len(ids) - WARM,
        "warm_up_tasks": WARM,
        "submit_errors": errors,
        "submit_wall_s": round(submitted_at - began, 2),
        "tenths": tenths,
        # Issue #19: the last tenth's submit rate must not fall > 20 % below the first's.
        "submit_rate_last_vs_first_ratio": round(last / first, 3) if first else None,
        "store_bytes_per_queued_task": round(queued_bytes / max(1, len(ids) - WARM), 1),
        "store_bytes_per_finished_task": round(finished_bytes / max(1, len(ids) - WARM), 1),
        "store_measure": "Redis INFO used_memory"
        if engine == "rabbitmq+redis"
        else "SQLite files incl. WAL",
        **reads,
        "drain_s": round(drain_s, 2),
        "drain_tasks_per_s": drain_tps,
        "drain_unfinished": unfinished,
        "overhead_tasks_per_s": overhead,
        "drain_vs_overhead_ratio": round(drain_tps / overhead, 3) if overhead else None,
        "closed_loop_tasks_per_s": closed["tasks_per_s"],
        "drain_vs_closed_loop_ratio": (
            round(drain_tps / closed["tasks_per_s"], 3) if closed["tasks_per_s"] else None
        ),
    }


def run(ctx: Context) -> dict[str, Any]:
    scale = min(1.0, ctx.bounds.seconds / FULL_SECONDS) ** 2
    results = []
    for engine, full in BACKLOG.items():
        results.append(_one_engine(ctx, engine, max(TENTHS * 10, int(full * scale))))
    return {"engines": results, "scale": scale, "plots": plot(results), "runs": []}


def plot(results: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    fig, (rate_ax, mem_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    for r in results:
        x = [t["backlog"] for t in r["tenths"]]
        rate_ax.plot(x, [t["submits_per_s"] for t in r["tenths"]], "o-", label=r["engine"])
        mem_ax.plot(x, [t["store_bytes"] / 2**20 for t in r["tenths"]], "o-", label=r["engine"])
    rate_ax.set_xlabel("tasks queued (no worker running)")
    rate_ax.set_ylabel("submits/s in that tenth")
    rate_ax.set_title("submit rate against backlog")
    mem_ax.set_xlabel("tasks queued")
    mem_ax.set_ylabel("store growth, MiB")
    mem_ax.set_title("store size against backlog")
    for ax in (rate_ax, mem_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = PLOTS / "backlog.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path.relative_to(Path(PLOTS).parent))]


def table(outcome: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(
        title=f"backlog: debug.echo, workers stopped, then drained (scale {outcome['scale']:.2f})"
    )
    for col in ("engine", "figure", "value"):
        t.add_column(col)
    for r in outcome["engines"]:
        rates = " ".join(f"{t['submits_per_s']:g}" for t in r["tenths"])
        rows = [
            ("backlog", f"{r['backlog']} ({r['submit_wall_s']} s to submit)"),
            ("submits/s per tenth", rates),
            ("last / first tenth", f"{r['submit_rate_last_vs_first_ratio']}"),
            (
                "store bytes per queued / finished task",
                f"{r['store_bytes_per_queued_task']} / "
                f"{r['store_bytes_per_finished_task']} ({r['store_measure']})",
            ),
            (
                "GET /v1/tasks/{id} p50 / p99 ms",
                f"{r['get_task_ms']['p50']} / {r['get_task_ms']['p99']}",
            ),
            (
                "GET /v1/tasks p50 / p99 ms",
                f"{r['list_tasks_ms']['p50']} / {r['list_tasks_ms']['p99']}",
            ),
            (
                "drain tasks/s (÷ closed loop after; ÷ overhead run)",
                f"{r['drain_tasks_per_s']} ({r['drain_vs_closed_loop_ratio']}; "
                f"{r['drain_vs_overhead_ratio']})",
            ),
        ]
        for name, value in rows:
            t.add_row(r["engine"], name, value)
    return t
