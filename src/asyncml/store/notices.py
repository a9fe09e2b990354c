"""Requests waiting in one API process, for tasks to finish or for their events: each
registers, and whatever learns of it (a Redis notice, a SQLite poll) wakes its waiters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TypeVar

T = TypeVar("T")


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


class EventWatch:
    """Requests of one API process waiting for a task's events, or for its queue's order to
    move; whatever learns of either (a Redis notice, a SQLite poll) wakes them."""

    def __init__(self) -> None:
        self.events = FinishNotices()  # by task id
        self.moves = FinishNotices()  # by queue name

    async def wait(
        self,
        task_id: str,
        queue: str | None,
        timeout_s: float,
        read: Callable[[], Awaitable[list[T]]],
    ) -> list[T]:
        """``read()``, and if it finds nothing, ``read()`` again once a notice for the task
        (or its queue) comes or ``timeout_s`` passes. Registered before the first read, so
        a notice that lands in between is not missed."""
        with ExitStack() as registered:
            woken = [registered.enter_context(self.events.registered(task_id))]
            if queue:
                woken.append(registered.enter_context(self.moves.registered(queue)))
            found = await read()
            if found or timeout_s <= 0:
                return found
            await asyncio.wait(
                [asyncio.shield(notice) for notice in woken],
                timeout=timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            return await read()

    def __len__(self) -> int:
        return len(self.events.awaited()) + len(self.moves.awaited())

    def __bool__(self) -> bool:
        return bool(self.events) or bool(self.moves)
