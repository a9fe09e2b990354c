"""Group commit: writes that arrive while a commit is under way share the next one, and
each caller fails exactly when the commit holding its item failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from asyncml.store.sqlite.group_commit import GroupCommit


class Writer:
    """A turn the test holds while items pile up, and a log of the commits made."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.lock = threading.Lock()
        self.commits: list[list[int]] = []
        self.fail_with = fail_with

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self.lock:
            yield

    def write(self, items: list[int]) -> None:
        self.commits.append(items)
        if self.fail_with is not None:
            raise self.fail_with


def _submit_while_the_turn_is_held(
    group: GroupCommit[int], writer: Writer, n: int
) -> list[BaseException | None]:
    with ThreadPoolExecutor(n) as pool:
        with writer.lock:  # a commit under way: every submission queues behind it
            futures = [pool.submit(group.submit, i, writer.turn, writer.write) for i in range(n)]
            while len(group._pending) < n:
                time.sleep(0.001)
        return [f.exception(timeout=5) for f in futures]


def test_items_pending_during_a_commit_share_the_next_one() -> None:
    group: GroupCommit[int] = GroupCommit()
    writer = Writer()
    errors = _submit_while_the_turn_is_held(group, writer, 8)
    assert errors == [None] * 8
    assert len(writer.commits) == 1  # one transaction, one sync, for all eight
    assert sorted(writer.commits[0]) == list(range(8))


def test_a_lone_item_is_written_at_once_by_its_own_caller() -> None:
    group: GroupCommit[int] = GroupCommit()
    writer = Writer()
    group.submit(7, writer.turn, writer.write)
    assert writer.commits == [[7]]


def test_every_caller_of_a_failed_commit_gets_its_error_and_the_next_one_starts_afresh() -> None:
    group: GroupCommit[int] = GroupCommit()
    writer = Writer(fail_with=OSError("disk full"))
    errors = _submit_while_the_turn_is_held(group, writer, 4)
    assert all(isinstance(e, OSError) and str(e) == "disk full" for e in errors)
    assert len(writer.commits) == 1
    writer.fail_with = None
    group.submit(9, writer.turn, writer.write)  # nothing of the failed batch is left over
    assert writer.commits[-1] == [9]


def test_an_item_is_never_written_twice() -> None:
    group: GroupCommit[int] = GroupCommit()
    writer = Writer()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: group.submit(i, writer.turn, writer.write), range(500)))
    written = [item for commit in writer.commits for item in commit]
    assert sorted(written) == list(range(500))


def test_an_item_whose_caller_got_no_turn_is_never_written_later() -> None:
    group: GroupCommit[int] = GroupCommit()
    writer = Writer()

    @contextmanager
    def broken_turn() -> Iterator[None]:
        raise OSError("no turn")
        yield  # pragma: no cover

    with pytest.raises(OSError, match="no turn"):
        group.submit(1, broken_turn, writer.write)  # its caller reports a failed publish
    group.submit(2, writer.turn, writer.write)
    assert writer.commits == [[2]]
