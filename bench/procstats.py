"""CPU seconds and resident memory of process trees, read from /proc (psutil is not a dependency).

A meter watches named roots (the API, the workers, a broker) and everything below them. CPU
is the difference of utime + stime between the start and the end of the measured window,
summed over the tree; a process that exits inside the window loses its share, which is why
scenarios keep their processes up for the whole window. Memory is sampled every
`interval_s` (the tree's summed RSS) and read once at the end from each process's own
high-water mark (VmHWM), which also covers peaks between samples.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(rest[1]), []).append(int(entry.name))
    return children


def tree(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    children = children if children is not None else children_map()
    found, pending = [root], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _cpu_ticks(pid: int) -> int | None:
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[11]) + int(rest[12])  # utime, stime


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def proc_kb(pid: int, field: str, source: str = "status") -> int | None:
    """A `Field:  N kB` line of /proc/<pid>/status (VmHWM, VmRSS) or smaps_rollup (Pss)."""
    try:
        text = Path(f"/proc/{pid}/{source}").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def _hwm_bytes(pid: int) -> int:
    return (proc_kb(pid, "VmHWM") or 0) * 1024


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass
class _Role:
    cpu_start: dict[int, int] = field(default_factory=dict)
    cpu_end: dict[int, int] = field(default_factory=dict)
    peak_tree_rss: int = 0
    hwm: dict[int, int] = field(default_factory=dict)


class Meter:
    """Measures `roots` (label -> root pid) from start() to stop().

    `classify(argv)` may split one tree into roles (`asyncml up` runs the API and the
    workers below one supervisor); it returns a role name, or None to keep the root's label.
    """

    def __init__(
        self,
        roots: dict[str, int],
        *,
        classify: Callable[[list[str]], str | None] | None = None,
        interval_s: float = 0.25,
    ) -> None:
        self.roots = roots
        self.classify = classify
        self.interval_s = interval_s
        self.roles: dict[str, _Role] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._role_of: dict[int, str] = {}

    def _members(self) -> dict[str, list[int]]:
        children = children_map()
        parents = {child: parent for parent, kids in children.items() for child in kids}
        members: dict[str, list[int]] = {}
        for label, root in self.roots.items():
            for pid in tree(root, children):  # a parent before its children
                if pid not in self._role_of:
                    role = self.classify(cmdline(pid)) if self.classify else None
                    # Unclassified below a classified parent (uvicorn's worker processes
                    # under `asyncml api`): the parent's role.
                    inherited = self._role_of.get(parents.get(pid, 0)) if pid != root else None
                    self._role_of[pid] = role or inherited or label
                members.setdefault(self._role_of[pid], []).append(pid)
        return members

    def rss_mb(self, role: str) -> float:
        """The summed RSS of a role's processes now (outside any window: a before/after)."""
        pids = self._members().get(role, [])
        return round(sum(_rss_bytes(p) for p in pids) / MB, 1)

    def _ticks(self) -> dict[str, dict[int, int]]:
        snapshot: dict[str, dict[int, int]] = {}
        for role, pids in self._members().items():
            snapshot[role] = {pid: ticks for pid in pids if (ticks := _cpu_ticks(pid)) is not None}
        return snapshot

    def _sample(self) -> None:
        for role, pids in self._members().items():
            state = self.roles.setdefault(role, _Role())
            state.peak_tree_rss = max(state.peak_tree_rss, sum(_rss_bytes(p) for p in pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        for role, ticks in self._ticks().items():
            self.roles.setdefault(role, _Role()).cpu_start = ticks
        self._sample()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        for role, ticks in self._ticks().items():
            state = self.roles.setdefault(role, _Role())
            state.cpu_end = ticks
            state.hwm = {pid: _hwm_bytes(pid) for pid in ticks}
        return self.report()

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role, state in sorted(self.roles.items()):
            cpu = sum(end - state.cpu_start.get(pid, 0) for pid, end in state.cpu_end.items())
            out[role] = {
                "cpu_s": round(cpu / _TICKS, 2),
                "processes": len(state.cpu_end),
                "peak_rss_mb": round(state.peak_tree_rss / MB, 1),
                "max_process_rss_mb": round(max(state.hwm.values(), default=0) / MB, 1),
            }
        return out


def own_cpu_s() -> float:
    """CPU seconds of this process (the load generator), all threads."""
    times = os.times()
    return times.user + times.system
