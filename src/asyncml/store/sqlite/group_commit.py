"""Group commit across threads: writes that arrive while a commit is under way share the next.

An accepted task's broker message must be on disk before the API answers. Publishing
threads queued behind one another for the file's write turn (turns.py) paid a commit each,
and the commit's sync after it (wal_flush.py). Here each thread adds its item to the
pending ones and takes the turn; the first to get it writes every item pending at that
moment in one transaction, and the others find theirs already written when their turn
comes. The task store does the same for its records in the API's event loop
(sqlite/aio.py); this is the same idea for callers that are threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

T = TypeVar("T")


class _Entry(Generic[T]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Items of many threads, written by whichever of them gets the writer's turn first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Entry[T]] = []

    def submit(
        self,
        item: T,
        turn: Callable[[], AbstractContextManager[object]],
        write: Callable[[list[T]], None],
    ) -> None:
        """Return once ``item`` is written: by this thread, under ``turn``, with every item
        pending then (``write`` commits them as one transaction), or by an earlier holder
        of the turn. If the commit that held ``item`` failed, raise what it raised: each
        caller fails exactly when its own item was not written."""
        entry = _Entry(item)
        with self._lock:
            self._pending.append(entry)
        try:
            self._commit(entry, turn, write)
        except BaseException:
            with self._lock:  # no turn (or no write) for it: no later commit may write it
                if entry in self._pending:
                    self._pending.remove(entry)
            raise
        if entry.error is not None:
            raise entry.error

    def _commit(
        self,
        entry: _Entry[T],
        turn: Callable[[], AbstractContextManager[object]],
        write: Callable[[list[T]], None],
    ) -> None:
        with turn():
            if not entry.done:
                with self._lock:
                    batch, self._pending = self._pending, []
                try:
                    write([pending.item for pending in batch])
                except BaseException as exc:
                    for pending in batch:
                        pending.error = exc
                    raise
                finally:
                    for pending in batch:
                        pending.done = True
