"""Footprint: a worker idle after start-up (issue #7: RSS <= 150 MB, start-up <= 3 s), and
the CPU `asyncml up` burns doing nothing (issue #19: <= 1 % of a core for its whole tree)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from procstats import cmdline, proc_kb, tree
from rich.table import Table
from stack import WORKER_CONCURRENCY, bench_service_env, pid_of, worker_process

from .context import Context
from .measure import target
from .overhead import IDLE_SETTLE_S, IDLE_WINDOW_S, MakeRunStack

FOOTPRINT_RSS_MB = 150.0
FOOTPRINT_START_S = 3.0
FOOTPRINT_IDLE_S = 3.0
IDLE_CPU_LIMIT_PCT = 1.0  # of one core, the whole `asyncml up` tree
FOOTPRINT_WORKERS = [
    ("audio,euro,webhooks", ["--concurrency", str(WORKER_CONCURRENCY)]),
    ("models", []),
]


def run(ctx: Context) -> dict[str, Any]:
    """Spawn -> Celery's " ready." line, then each process's RSS after 3 s idle; 3 starts each."""
    runs = []
    for queues, extra in FOOTPRINT_WORKERS:
        starts = [_start_once(ctx, queues, extra, n) for n in range(3)]
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
    idle = _idle_up(ctx)
    # "custom_table" stays in the JSON line for its readers: these runs have no load figures.
    return {"runs": runs, "idle_up": idle, "custom_table": "footprint"}


def _idle_up(ctx: Context) -> dict[str, Any]:
    """`asyncml up` as `make run` starts it, idle: CPU of each process of its tree over 20 s.

    Measured after its workers are ready, the API answers, and IDLE_SETTLE_S more (imports
    finishing, first heartbeats), with no request at all.
    """
    stack = MakeRunStack(Path(tempfile.mkdtemp(prefix="footprint-up-", dir=ctx.workdir)))
    try:
        time.sleep(IDLE_SETTLE_S)  # start-up's tail is not idleness; what follows is measured
        idle = stack.idle_cpu(IDLE_WINDOW_S)
    finally:
        stack.stop()
    run: dict[str, Any] = {"run": "asyncml up (as make run starts it), idle", **idle}
    target(
        run,
        f"idle CPU of the tree over {IDLE_WINDOW_S:g} s <= {IDLE_CPU_LIMIT_PCT:g} % of a core",
        idle["cpu_pct_total"],
        IDLE_CPU_LIMIT_PCT,
        at_most=True,
    )
    return run


def _start_once(ctx: Context, queues: str, extra: list[str], run_no: int) -> dict[str, Any]:
    """One start of a worker: seconds to its " ready." line, then its tree's memory, idle."""
    workdir = Path(tempfile.mkdtemp(prefix="footprint-", dir=ctx.workdir))
    bundled = {"ASYNCML_MODELS_BUNDLED": str(queues == "models").lower()}
    _, env = bench_service_env(workdir, bundled, ctx.infra)
    name = f"worker-{queues.replace(',', '-')}-{run_no}"
    worker = worker_process(name, queues, extra, env=env, workdir=workdir)
    began = time.perf_counter()
    worker.start()
    try:
        worker.wait_for_line(" ready.", timeout=60)
        ready_s = round(time.perf_counter() - began, 2)
        time.sleep(FOOTPRINT_IDLE_S)  # the idle state is what is measured, not a wait for it
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


def _proc_mb(pid: int, field: str) -> float | None:
    """VmRSS (from /proc/<pid>/status) or Pss (from smaps_rollup), in MB."""
    kb = proc_kb(pid, field, "smaps_rollup" if field == "Pss" else "status")
    return None if kb is None else round(kb / 1024, 1)


def table(outcome: dict[str, Any]) -> Table:
    """A row per process of each worker: the run table's one column per run does not fit."""
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
    idle = outcome.get("idle_up")
    if idle:
        verdicts = "; ".join(
            f"{t['result']} {t['target']} ({t['value']})" for t in idle.get("targets", [])
        )
        for i, proc in enumerate(idle["processes"]):
            table.add_row(
                idle["run"] if i == 0 else "",
                "",
                f"{proc['cmd']} {proc['pid']}",
                f"CPU {proc['cpu_pct']:.2f} %",
                verdicts if i == 0 else "",
            )
        table.add_row("", "", "total", f"CPU {idle['cpu_pct_total']:.2f} %", "")
    return table
