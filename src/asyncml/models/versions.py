"""The versions of one model, which one answers a request, and picking up version folders
added or removed while the service runs.

A model is served under one kind (``model.<name>``) whatever its versions: a request names
a version, or leaves the choice to the model (its default, or the canary split of its
``[traffic]``). The split is drawn per request; with a key (an ``Idempotency-Key``, or the
task's id when the worker draws) the draw is a hash of the key, so the same key always
lands on the same version and a redelivered task does not change version half-way.

Each process (the API, every worker) keeps its own view of the folder and looks at it
again at most every ``WATCH_S`` seconds; a change is applied once the folder has stayed
the same for one more look (a version being copied in is not read half-written), or at
the next look after ``asyncml models reload`` touched the reload stamp. A version removed
from disk stays usable in a process that has it loaded, so its tasks already queued there
finish on it; elsewhere they fail as ``model_unavailable``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncml.models.errors import ModelUnavailable, ModelVersionUnknown
from asyncml.models.loaders import CACHE, ModelSpec, OutputTypes

log = logging.getLogger(__name__)

WATCH_S = 1.0
RELOAD_STAMP = ".reload"


@dataclass(frozen=True)
class Problem:
    folder: Path
    message: str


@dataclass(frozen=True)
class ServedModel:
    """One model as read from its folder: the versions that serve, highest first."""

    name: str
    folder: Path
    versions: Mapping[str, ModelSpec]
    default: str | None
    traffic: Mapping[str, float] = field(default_factory=dict)
    outputs: Mapping[str, OutputTypes] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    layout: str = "flat"  # flat | versioned | mlflow

    @property
    def default_spec(self) -> ModelSpec | None:
        return None if self.default is None else self.versions[self.default]

    def split(self) -> dict[str, float]:
        """The share of unversioned requests each version gets (the weights of versions
        that serve, normalised); without ``[traffic]``, all to the default."""
        weights = {v: w for v, w in self.traffic.items() if v in self.versions and w > 0}
        total = sum(weights.values())
        if not total:
            return {} if self.default is None else {self.default: 1.0}
        return {v: w / total for v, w in sorted(weights.items(), key=lambda kv: _order(kv[0]))}

    def choose(self, key: str | None = None) -> str | None:
        """The version for a request that names none (None: the model has no version)."""
        return pick(self.split(), key)


def _order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def by_version(versions: Mapping[str, ModelSpec]) -> dict[str, ModelSpec]:
    """Highest version first (numbered folders by number)."""
    return dict(sorted(versions.items(), key=lambda kv: _order(kv[0]), reverse=True))


def pick(split: Mapping[str, float], key: str | None = None) -> str | None:
    """Draw one version of ``split`` by its share: at random, or by a hash of ``key`` so a
    key always gets the same version."""
    if not split:
        return None
    if key is None:
        u = random.random()  # noqa: S311  # traffic shaping, not security
    else:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    chosen = next(iter(split))
    for version, share in split.items():
        chosen = version
        cumulative += share
        if u < cumulative:
            break
    return chosen


Reader = Callable[[], ServedModel]
Signature = Callable[[], tuple[Any, ...]]


class LiveModel:
    """This process's view of one model folder, refreshed as the folder changes."""

    def __init__(
        self,
        served: ServedModel,
        *,
        read: Reader,
        signature: Signature,
        stamp: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        watch_s: float = WATCH_S,
    ) -> None:
        self.name = served.name
        self._served = served
        self._read = read
        self._signature = signature
        self._stamp = stamp
        self._clock = clock
        self._watch_s = watch_s
        self._lock = threading.Lock()
        self._applied = self._look()
        self._pending: tuple[Any, ...] | None = None
        self._checked = clock()
        self._forced = -math.inf
        self._retired: dict[str, ModelSpec] = {}

    def _look(self) -> tuple[Any, ...]:
        try:
            return (self._signature(), _mtime(self._stamp))
        except OSError as exc:
            return (repr(exc),)

    def current(self) -> ServedModel:
        """The model as last applied, after a look at the folder if one is due."""
        if self._watch_s > 0 and self._clock() - self._checked >= self._watch_s:
            with self._lock:
                if self._clock() - self._checked >= self._watch_s:
                    self._checked = self._clock()
                    seen = self._look()
                    stamped = seen[-1] != self._applied[-1]
                    if seen != self._applied and (stamped or seen == self._pending):
                        self._apply(seen)
                    else:
                        self._pending = None if seen == self._applied else seen
        return self._served

    def reload(self) -> ServedModel:
        """Read the folder now, whatever changed or not."""
        with self._lock:
            self._apply(self._look())
        return self._served

    def _apply(self, seen: tuple[Any, ...]) -> None:
        try:
            served = self._read()
        except Exception as exc:  # the folder went away or broke: keep serving what we had
            log.warning("model %s: folder unreadable, versions unchanged: %s", self.name, exc)
            self._applied = seen
            return
        before, after = set(self._served.versions), set(served.versions)
        for version in before - after:
            self._retired[version] = self._served.versions[version]
        for version in after:
            self._retired.pop(version, None)
        for problem in served.problems:
            log.warning("model %s: %s skipped: %s", self.name, problem.folder, problem.message)
        if before != after or served.default != self._served.default:
            log.info(
                "model %s: versions %s, default %s (were %s, default %s)",
                self.name,
                sorted(after, key=_order),
                served.default,
                sorted(before, key=_order),
                self._served.default,
            )
        self._served = served
        self._applied = seen
        self._pending = None

    def knows(self, version: str) -> bool:
        """Served now, or removed but still loaded here (its queued tasks finish on it).

        A version this process has not seen yet makes it read the folder at once (at most
        once per ``WATCH_S``): the API may have seen a new version before this worker did."""
        if version in self.current().versions:
            return True
        retired = self._retired.get(version)
        if retired is not None and retired in CACHE:
            return True
        if self._watch_s > 0 and self._clock() - self._forced >= self._watch_s:
            self._forced = self._clock()
            return version in self.reload().versions
        return False

    def resolve(self, version: str | None, key: str | None = None) -> ModelSpec:
        """The spec that answers: the version asked for, else the default or the split."""
        served = self.current()
        if version is None:
            version = served.choose(key)
            if version is None:
                raise ModelUnavailable(f"model {self.name} has no version that can be served")
        spec = served.versions.get(version)
        if spec is None:
            retired = self._retired.get(version)
            if retired is not None and retired in CACHE:
                return retired
            raise ModelVersionUnknown(
                f"model {self.name} has no version {version!r} "
                f"(serving {', '.join(sorted(served.versions, key=_order)) or 'none'})"
            )
        return spec


def _mtime(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def folder_signature(folder: Path) -> tuple[Any, ...]:
    """What changes when a version folder is added, removed or rewritten: every file's
    name, size and time of change, two levels down (cheap: a few stat calls)."""
    entries: list[tuple[str, int, int]] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            for inner in sorted(path.iterdir()):
                st = inner.stat()
                entries.append((f"{path.name}/{inner.name}", st.st_size, st.st_mtime_ns))
        else:
            st = path.stat()
            entries.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(entries)
