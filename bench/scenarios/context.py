"""What the scenarios of one invocation share: its folder, servers, bounds and ceilings.

Scenarios run in order in one Context, so a later one can read what an earlier one measured:
every run's ratios to the ceilings, and the overhead run's tasks/s for the euro and models
targets.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from source_server import SourceServer
from stack import BrokerStack, EmbeddedStack, Infra, Stack

from .measure import Bounds, ratios


@dataclass
class Ceilings:
    """The ceilings' runs, once the ceilings scenario has measured them (None when skipped)."""

    http: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    redis_benchmark: dict[str, float] | None = None


class Context:
    def __init__(self, workdir: Path, *, bounds: Bounds, engine: str) -> None:
        self.workdir = workdir
        self.bounds = bounds
        self.engine = engine  # of the kind scenarios (euro, audio); --engine changes it
        self.infra = Infra(workdir / "infra")
        self.ceilings = Ceilings()
        self.overhead_tps: float | None = None  # rabbitmq+redis debug.echo, submit + poll
        self.sources = SourceServer(workdir / "files")
        (workdir / "files").mkdir(parents=True, exist_ok=True)

    def stack(self, engine: str, extra_env: dict[str, str]) -> Stack:
        workdir = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=self.workdir))
        if engine == "embedded":
            return EmbeddedStack(workdir, extra_env)
        return BrokerStack(workdir, self.infra, extra_env)

    def with_ratios(self, run: dict[str, Any]) -> dict[str, Any]:
        ratios(run, self.ceilings.http, "http_ceiling")
        if run["engine"] == "rabbitmq+redis":
            ratios(run, self.ceilings.engine, "engine_ceiling")
        return run


@contextlib.contextmanager
def open_context(keep: Path | None, *, bounds: Bounds, engine: str) -> Iterator[Context]:
    """A Context in `keep` (logs and data stay) or a temporary folder; servers stop at exit."""
    with contextlib.ExitStack() as stack:
        if keep is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncml-bench-"))
            )
        else:
            workdir = keep.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        ctx = Context(workdir, bounds=bounds, engine=engine)
        with ctx.sources:
            try:
                yield ctx
            finally:
                ctx.infra.close()
