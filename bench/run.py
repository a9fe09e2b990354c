"""Run benchmark scenarios: `python bench/run.py [scenario ...]` (all of them by default).

Each scenario (one module each in scenarios/) starts the real processes on loopback
(stack.py), drives them with the load generator (loadgen.py), prints one JSON line
(machine-readable, stable keys) and a table for people. Ceilings run first in the same
invocation, so every platform figure is also given as a ratio to the ceiling measured
minutes before on the same machine and load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scenarios import ALIASES, SCENARIOS
from scenarios.context import open_context
from scenarios.measure import Bounds
from scenarios.tables import console, print_table
from stack import BENCH_DIR, WORKER_CONCURRENCY


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


def main(argv: list[str] | None = None) -> int:
    defaults = Bounds()
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
        "--clients",
        type=int,
        default=defaults.clients,
        help=f"closed-loop clients ({defaults.clients})",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=defaults.seconds,
        help=f"wall-clock cap of one measured run ({defaults.seconds:g}); at most 60",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 1 <= args.seconds <= 60:
        parser.error("--clients must be 1-256 and --seconds 1-60: runs stay bounded")
    bounds = Bounds(clients=args.clients, seconds=args.seconds)
    chosen: list[str] = []
    everything = [name for name in SCENARIOS if name != "ceilings" or not args.no_ceilings]
    for name in args.scenarios or everything:
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
        f"machine: {machine()}; {bounds.clients} clients, closed loop, at most "
        f"{bounds.max_tasks} tasks or {bounds.seconds:.0f} s per run; "
        f"{WORKER_CONCURRENCY} worker processes"
    )
    started_at = time.monotonic()
    with open_context(args.workdir, bounds=bounds, engine=args.engine) as ctx:
        for name in chosen:
            scenario = SCENARIOS[name]
            began = time.monotonic()
            outcome = scenario.run(ctx)
            line = {"scenario": name, "machine": machine(), **outcome}
            line["load"] = {
                "clients": bounds.clients,
                "max_tasks": bounds.max_tasks,
                "seconds": bounds.seconds,
                "worker_processes": WORKER_CONCURRENCY,
            }
            line["scenario_s"] = round(time.monotonic() - began, 1)
            print(json.dumps(line), flush=True)
            if scenario.table is not None:
                console.print(scenario.table(outcome))
            else:
                print_table(name, outcome, clients=bounds.clients)
    console.print(f"all scenarios: {time.monotonic() - started_at:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
