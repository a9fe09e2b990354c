"""The scenarios of `bench/run.py`, one module each, in the order a full run takes them.

Each scenario takes the invocation's Context and returns its outcome: `runs` (the figures
of each measured run) and whatever else its JSON line carries. A scenario whose runs do not
fit the run table (no load figures) brings its own `table`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from rich.table import Table

from . import audio, backlog, ceilings, curves, euro, events, footprint, models, overhead, peers
from .context import Context


class Scenario(NamedTuple):
    run: Callable[[Context], dict[str, Any]]
    table: Callable[[dict[str, Any]], Table] | None = None


SCENARIOS: dict[str, Scenario] = {
    "ceilings": Scenario(ceilings.run),
    "embedded": Scenario(overhead.run_embedded),
    "rabbitmq+redis": Scenario(overhead.run_rabbitmq_redis),
    "euro": Scenario(euro.run),
    "audio": Scenario(audio.run),
    "footprint": Scenario(footprint.run, footprint.table),
    "models": Scenario(models.run),
    "peers": Scenario(peers.run, peers.table),
    "curves": Scenario(curves.run, curves.table),
    "backlog": Scenario(backlog.run, backlog.table),
    "events": Scenario(events.run, events.table),
}
# `make bench-peers` runs peers and curves, `make bench-backlog` the backlog (with the
# overhead run its drain is compared with); `make bench` runs `main`, every other one.
SEPARATE = ("peers", "curves", "backlog")
ALIASES = {
    "overhead": ["embedded", "rabbitmq+redis"],
    "main": [name for name in SCENARIOS if name not in SEPARATE],
}
