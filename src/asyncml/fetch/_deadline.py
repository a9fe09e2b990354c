"""Download deadlines: one per call, and one per task shared by all of that task's calls."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(eq=False)
class FetchBudget:
    """One wall-clock allowance for everything one task fetches, started by its first request.

    With a deadline per request, a task that asked twice (audio.length's Range request, then
    the whole file) held its worker twice as long as ``total_s`` says, and a server dripping
    one byte a second could do that for every request a task makes. Share one budget between
    the fetchers of one task (``dataclasses.replace`` keeps it); never between tasks.
    """

    total_s: float
    started: float | None = None

    def start(self, now: float) -> float:
        """When the task's first request began (``now`` if this is the first)."""
        if self.started is None:
            self.started = now
        return self.started


@dataclass(frozen=True)
class _Deadline:
    """The deadline of one call: the earlier of its own cap and its task's budget."""

    at: float  # time.monotonic() value
    started: float  # when the time counted against ``limit_s`` began
    limit_s: float
    shared: bool  # the task's budget, not this call's own cap, sets it

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def message(self, shown: str) -> str:
        """The timeout message, with the time really taken: the limit alone misled when each
        request had its own."""
        elapsed = time.monotonic() - self.started
        if self.shared:
            return (
                f"download of {shown} timed out after {elapsed:.1f} s: all of a task's "
                f"downloads together may take {self.limit_s:g} s"
            )
        return (
            f"download of {shown} timed out after {elapsed:.1f} s (the limit is {self.limit_s:g} s)"
        )
