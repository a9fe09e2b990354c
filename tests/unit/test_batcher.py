"""Dynamic batching: concurrent callers share one call of the model, each gets its own rows'
answer, a bad row fails only its own caller, and a request that finds the model idle does not
wait for company."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from asyncml.models import Batcher, Prediction
from asyncml.models import batcher as batcher_module
from asyncml.models.loaders import OutputTypes


class Doubler:
    """Predicts 2x for each row; refuses a batch holding a negative value; counts calls."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def output_types(self) -> OutputTypes:
        return OutputTypes(predictions="FP64", probabilities="FP64")

    def predict(self, rows: Sequence[Sequence[Any]]) -> Prediction:
        with self._lock:
            self.calls.append(len(rows))
        if any(r[0] < 0 for r in rows):
            raise ValueError("negative input")
        time.sleep(self.delay_s)
        return Prediction(
            predictions=[2 * r[0] for r in rows], probabilities=[[r[0], 1.0] for r in rows]
        )


class Gated(Doubler):
    """A Doubler whose first call holds until ``gate`` is set: the model is busy meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = threading.Event()
        self.gate = threading.Event()

    def predict(self, rows: Sequence[Sequence[Any]]) -> Prediction:
        if not self.busy.is_set():
            self.busy.set()
            self.gate.wait(5)
        return super().predict(rows)


def _many(batcher: Batcher, tables: list[list[list[float]]]) -> list[Any]:
    """Each table's result (or error), asked for at once while the model is busy, so that
    the requests queue as they do under load."""
    model = batcher.predictor
    assert isinstance(model, Gated)
    with ThreadPoolExecutor(len(tables) + 1) as pool:
        busy = pool.submit(batcher.predict, [[0.0]], 5)
        assert model.busy.wait(5)
        futures = [pool.submit(batcher.predict, t, 5) for t in tables]
        while len(batcher._pending) < len(tables):
            assert not busy.done()
            time.sleep(0.001)
        model.gate.set()
        assert busy.result()[1] == 1
        del model.calls[0]
        return [f.exception() or f.result() for f in futures]


def test_concurrent_callers_share_calls_and_each_gets_its_own_answer() -> None:
    model = Gated()
    batcher = Batcher(model, max_batch_size=8, max_wait_ms=200)
    results = _many(batcher, [[[float(i)]] for i in range(16)])
    for i, (prediction, size) in enumerate(results):
        assert prediction.predictions == [2.0 * i]
        assert prediction.probabilities == [[float(i), 1.0]]
        assert size == 8
    assert model.calls == [8, 8]


def test_a_batch_is_cut_at_max_batch_size_and_never_splits_a_task() -> None:
    model = Gated()
    batcher = Batcher(model, max_batch_size=5, max_wait_ms=300)
    results = _many(batcher, [[[1.0], [2.0], [3.0]] for _ in range(4)])
    assert all(r[0].predictions == [2.0, 4.0, 6.0] for r in results)
    assert sorted(model.calls) == [3, 3, 3, 3]  # 3 + 3 > 5: each task alone


def test_a_lone_caller_waits_no_longer_than_max_wait() -> None:
    model = Doubler()
    batcher = Batcher(model, max_batch_size=32, max_wait_ms=300)
    batcher.predict([[0.0]], 5)  # the model has just run: the next request waits for company
    began = time.monotonic()
    prediction, size = batcher.predict([[1.0]], 5)  # none comes: cut at max_wait
    waited = time.monotonic() - began
    assert (prediction.predictions, size) == ([2.0], 1)
    assert 0.3 <= waited < 3.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_request_that_finds_the_model_idle_runs_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(batcher_module, "time", clock)
    model = Doubler()
    batcher = Batcher(model, max_batch_size=32, max_wait_ms=60_000)
    assert batcher.predict([[1.0]], 5)[1] == 1  # first ever: within 5 s, not after 60 s
    clock.now += 120  # idle for twice the wait
    assert batcher.predict([[2.0]], 5)[1] == 1  # at once again
    assert model.calls == [1, 1]


def test_a_request_that_finds_the_model_recently_busy_waits_for_company() -> None:
    model = Doubler(delay_s=0.05)
    batcher = Batcher(model, max_batch_size=2, max_wait_ms=60_000)
    batcher.predict([[1.0]], 5)  # the model has just run
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher.predict, [[2.0]], 5)
        time.sleep(0.1)
        assert not first.done()  # held for company, not run alone
        second = pool.submit(batcher.predict, [[3.0]], 5)
        assert first.result()[1] == second.result()[1] == 2
    assert model.calls == [1, 2]


def test_a_bad_row_fails_only_its_own_task() -> None:
    model = Gated()
    batcher = Batcher(model, max_batch_size=8, max_wait_ms=200)
    results = _many(batcher, [[[1.0]], [[-1.0]], [[3.0]], [[4.0]]])
    assert isinstance(results[1], ValueError)
    assert [results[i][0].predictions for i in (0, 2, 3)] == [[2.0], [6.0], [8.0]]
    assert model.calls[0] == 4  # tried together first, then each on its own


def test_a_caller_gives_up_at_its_timeout() -> None:
    batcher = Batcher(Doubler(delay_s=1.0), max_batch_size=1, max_wait_ms=0)
    with pytest.raises(TimeoutError):
        batcher.predict([[1.0]], 0.1)
