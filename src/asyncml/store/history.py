"""What the dashboard reads from a store: every task by submit time (for all owners, by
kind), the finished ones by finish time, queue depths now, and the input a task was
submitted with.

Both engines keep this in the store, never in an API process, so it survives a restart
and every API process sees the same. The cost on the hot paths, per task:

- Redis: inside the CREATE, START, FINISH and CANCEL scripts already run (no extra round
  trip): create adds 2 ZADDs, 2 trims and one hash field (the submit time); start one
  HSETNX (the first start time); finish or cancel one ZADD of a short summary member
  (``id|status|kind|wait|run|error type``) and one trim.
- SQLite: one index (``tasks_finished_at``) kept by finish and cancel; the input is one
  more column of the INSERT a submit already makes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

INPUT_KEPT_CHARS = 16_384  # an input longer than this (as JSON) is kept cut, and said so


@dataclass(frozen=True)
class FinishedTask:
    """A final task as the charts see it: what ended when, how long it waited and ran."""

    task_id: str
    status: str
    kind: str
    finished_at: float  # epoch seconds
    wait_s: float | None  # from submit to its first start; None if it never started
    run_s: float | None  # from its first start to its end; None if it never started
    error_type: str = ""


def kept_input(payload: dict[str, Any]) -> str:
    """The input as a task record keeps it: JSON, cut at ``INPUT_KEPT_CHARS`` (the record
    stays small; a cut input no longer parses, and the dashboard shows it as text)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= INPUT_KEPT_CHARS else text[:INPUT_KEPT_CHARS]


def summary_member(task: FinishedTask) -> str:
    """The Redis finished index's member for ``task`` (its Lua builds the same):
    ``id|status|kind|wait_s|run_s|error type|finished_at``."""
    wait = "" if task.wait_s is None else f"{task.wait_s:.3f}"
    run = "" if task.run_s is None else f"{task.run_s:.3f}"
    fields = (task.task_id, task.status, task.kind, wait, run, task.error_type)
    return "|".join((*fields, f"{task.finished_at:.3f}"))


def parse_summary(member: str) -> FinishedTask | None:
    parts = member.split("|")
    if len(parts) != 7:
        return None
    task_id, status, kind, wait, run, error_type, finished_at = parts
    return FinishedTask(
        task_id=task_id,
        status=status,
        kind=kind,
        finished_at=float(finished_at),
        wait_s=float(wait) if wait else None,
        run_s=float(run) if run else None,
        error_type=error_type,
    )
