"""The tables printed for people after each scenario's JSON line: one column per run."""

from __future__ import annotations

import shutil
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False, width=max(120, shutil.get_terminal_size().columns))


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(run: dict[str, Any], label: str) -> str:
    figures = run.get(f"vs_{label}")
    if not figures:
        return "-"
    p50 = figures["latency_p50_x"]
    return f"{figures['tasks_per_s']:.1%}, {'-' if p50 is None else f'{p50}x'}"


def _rows(run: dict[str, Any]) -> list[tuple[str, str]]:
    lat, sub = run["latency_ms"], run["submit_ms"]
    rows = [
        ("engine", run["engine"]),
        ("tasks ok / submitted", f"{run['succeeded']} / {run['submitted']} ({run['stopped_by']})"),
        ("tasks/s, first submit to last result", fmt_num(run["tasks_per_s"])),
        ("submits/s", fmt_num(run["submits_per_s"])),
        ("latency p50 / p90 / p99 / max ms", " / ".join(fmt_ms(lat[k]) for k in lat)),
        ("submit request p50 / p99 ms", f"{fmt_ms(sub['p50'])} / {fmt_ms(sub['p99'])}"),
        ("errors", ", ".join(f"{k} {v}" for k, v in run["errors"].items()) or "0"),
    ]
    parts = run.get("breakdown_ms", {})
    if any(p["p50"] is not None for p in parts.values()):
        rows.append(
            (
                "p50 ms: queued / running / until seen",
                " / ".join(fmt_ms(parts[k]["p50"]) for k in ("queue_wait", "run", "after_finish")),
            )
        )
    for role, p in run["processes"].items():
        rows.append(
            (
                f"{role}: CPU s (ms/task), peak RSS MB",
                f"{p['cpu_s']:.1f} ({p['cpu_ms_per_task']:.2f}), {p['peak_rss_mb']:.0f}"
                f" in {p['processes']}",
            )
        )
    if run.get("broker_queues"):
        rows.append(("RabbitMQ queue: ready, unacked, consumers", run["broker_queues"]))
    bound = " (bound: the figure is the generator's)" if run["loadgen_bound"] else ""
    rows.append(("load generator CPU s", f"{run['loadgen_cpu_s']:.1f}{bound}"))
    if run.get("batch_size"):
        sizes = run["batch_size"]
        rows.append(
            (
                "batch_size mean / p50 / p90 / max",
                f"{sizes['mean']} / {sizes['p50']:.0f} / {sizes['p90']:.0f} / {sizes['max']:.0f}",
            )
        )
    if run.get("vs_in_process"):
        vs = run["vs_in_process"]
        rows.append(
            ("vs in-process: one row, batched", f"{vs['one_row']:.1%}, {vs['batched']:.1%}")
        )
    for entry in run.get("targets", []):
        value = entry["value"]
        shown = "-" if value is None else f"{value:.3g}"
        rows.append(
            (
                f"target: {entry['target']}",
                f"{entry['result']} ({shown} {entry['op']} {entry['limit']:g})",
            )
        )
    for label in ("http_ceiling", "engine_ceiling"):
        if f"vs_{label}" in run:
            rows.append((f"vs {label.replace('_', ' ')}: tasks/s, p50", _ratio(run, label)))
    return rows


def print_table(scenario: str, outcome: dict[str, Any], *, clients: int) -> None:
    """A row per figure, a column per run; then the outcome's note, problems, redis-benchmark."""
    table = Table(title=scenario, title_justify="left")
    table.add_column("")
    per_run = [dict(_rows(run)) for run in outcome["runs"]]
    labels: list[str] = []
    for rows in per_run:
        labels += [label for label in rows if label not in labels]
    for run in outcome["runs"]:
        table.add_column(run["run"], justify="right")
    for label in labels:
        table.add_row(label, *(rows.get(label, "") for rows in per_run))
    console.print(table)
    if outcome.get("note"):
        console.print(f"note: {outcome['note']}")
    for problem in outcome.get("problems", []):
        console.print(f"problem: {problem}")
    for entry in outcome.get("targets", []):  # a scenario's own, over several runs
        values = entry.get("values")
        spread = f" (runs: {', '.join(f'{v:g}' for v in values)})" if values else ""
        console.print(f"target: {entry['target']}: {entry['result']} ({entry['value']}){spread}")
    if outcome.get("redis_benchmark"):
        figures = ", ".join(f"{k} {v:.0f}" for k, v in outcome["redis_benchmark"].items())
        console.print(f"redis-benchmark (-c {clients}): {figures}")
