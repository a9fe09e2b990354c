"""Requests waiting for tasks to finish, in one API process: each registers, and whatever
learns that a task finished (a Redis notice, a SQLite poll) wakes all of its waiters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class FinishNotices:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    @contextmanager
    def registered(self, task_id: str) -> Iterator[asyncio.Future[None]]:
        """A future set when ``task_id`` is announced final; forgotten on exit."""
        notice: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(notice)
        try:
            yield notice
        finally:
            waiting = self._waiters.get(task_id)
            if waiting is not None:
                waiting.discard(notice)
                if not waiting:
                    del self._waiters[task_id]

    def wake(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            for notice in self._waiters.get(task_id, ()):
                if not notice.done():
                    notice.set_result(None)

    def awaited(self) -> list[str]:
        """The tasks someone is waiting for now."""
        return list(self._waiters)

    def __bool__(self) -> bool:
        return bool(self._waiters)
