"""Markdown tables from the JSON lines of a bench run: `python bench/report.py [FILE ...]`.

The figures in bench/README.md, docs/performance.md and the README's Performance section
are copied from this output, so that what the docs say is what a run printed, not a
retyping of it. Reads `bench/latest.jsonl` by default; several files are read in order (a
later line of the same scenario replaces an earlier one). Prints three tables: the peers
(system, work, tasks/s with the spread of its runs, p50/p95 at 25 % load, CPU and RSS, and
what each system's path guarantees), the peer comparisons (`tasks_per_s_ratio`,
`p50_ratio`: at least 1.0 means we are ahead), and every target a scenario checked, with
its value and PASS or MISS.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
NONE = "\u2013"  # an en dash: no figure
SYSTEMS = {
    "rabbitmq+redis": "asyncml, RabbitMQ + Redis",
    "embedded": "asyncml embedded (`asyncml up`)",
    "bentoml": "BentoML tasks",
    "ray-serve-async": "Ray Serve asynchronous inference (Celery)",
    "ray-serve": "Ray Serve (HTTP)",
}


def load(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """The last line of each scenario across the files, in the order given."""
    scenarios: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith('{"scenario"'):  # a run's stdout also holds its tables
                outcome = json.loads(line)
                scenarios[outcome["scenario"]] = outcome
    return scenarios


def _num(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def _spread(figure: dict[str, float] | None) -> str:
    if not figure:
        return NONE
    return f"{figure['median']:.1f} [{figure['min']:.1f}-{figure['max']:.1f}]"


def _short(text: str) -> str:
    """A guarantee's first clause: the table keeps the verdict, the JSON keeps the reason."""
    return text.split(":", 1)[0]


def peers_table(peers: dict[str, Any]) -> list[str]:
    lines = [
        "| system | work | tasks/s, median [min-max] of 3 | p50 / p95 ms at 25 % load | "
        "CPU ms/task | generator ms/task | RSS MB | idle CPU % | queue | survives a worker kill |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in peers["rows"]:
        cpu = row.get("cpu_ms_per_task") or {}
        gen = row.get("loadgen_cpu_ms_per_task") or {}
        lines.append(
            f"| {SYSTEMS.get(row['system'], row['system'])} | {row['workload']} "
            f"| {_spread(row.get('tasks_per_s'))} "
            f"| {_num(row.get('p50_ms_at_25'), 0)} / {_num(row.get('p95_ms_at_25'), 0)} "
            f"| {_num(cpu.get('median'))} | {_num(gen.get('median'))} "
            f"| {_num(row.get('rss_mb'), 0)} | {_num(row.get('idle_cpu_pct'))} "
            f"| {_short(row['queue'])} "
            f"| {_short(row['survives_worker_kill'])} |"
        )
    for failure in peers.get("failures", []):
        lines.append(f"\nNot measured: {failure}")
    return lines


def comparisons_table(peers: dict[str, Any]) -> list[str]:
    pairs = peers.get("comparisons", [])
    columns = sorted(
        {(c["peer"], c["workload"]) for c in pairs}, key=lambda k: (k[0], _WORK.get(k[1], 9))
    )
    header = " | ".join(f"vs {SYSTEMS.get(p, p)}: {w}" for p, w in columns)
    lines = [f"| tasks/s ratio · p50 ratio | {header} |", "|---|" + "---:|" * len(columns)]
    for us in ("rabbitmq+redis", "embedded"):
        cells = []
        for peer, work in columns:
            found = [c for c in pairs if (c["us"], c["peer"], c["workload"]) == (us, peer, work)]
            c = found[0] if found else None
            cells.append(
                NONE
                if c is None
                else f"{_num(c['tasks_per_s_ratio'], 2)} · {_num(c['p50_ratio'], 2)}"
            )
        lines.append(f"| {SYSTEMS[us]} | " + " | ".join(cells) + " |")
    return lines


_WORK = {"echo": 0, "iris": 1, "heavy": 2}


def targets_table(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| scenario | run | target | measured | |", "|---|---|---|---:|---|"]
    for name, outcome in scenarios.items():
        for run in outcome.get("runs", []):
            for t in run.get("targets", []):
                lines.append(
                    f"| {name} | {run.get('run', '')} | {t['target']} "
                    f"| {t['value']} | {t['result']} |"
                )
        for t in outcome.get("targets", []):
            lines.append(f"| {name} | | {t['target']} | {t['value']} | {t['result']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, default=[BENCH_DIR / "latest.jsonl"])
    args = parser.parse_args(argv)
    scenarios = load(args.files)
    sections: list[list[str]] = []
    if "peers" in scenarios:
        sections += [peers_table(scenarios["peers"]), comparisons_table(scenarios["peers"])]
    sections.append(targets_table(scenarios))
    print("\n\n".join("\n".join(s) for s in sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
