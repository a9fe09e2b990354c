"""Dynamic batching: concurrent callers share one call of the model, each gets its own rows'
answer, and a bad row fails only its own caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from asyncml.models import Batcher, Prediction
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


def _many(batcher: Batcher, tables: list[list[list[float]]]) -> list[Any]:
    with ThreadPoolExecutor(len(tables)) as pool:
        futures = [pool.submit(batcher.predict, t, 5) for t in tables]
        return [f.exception() or f.result() for f in futures]


def test_concurrent_callers_share_calls_and_each_gets_its_own_answer() -> None:
    model = Doubler()
    batcher = Batcher(model, max_batch_size=8, max_wait_ms=200)
    results = _many(batcher, [[[float(i)]] for i in range(16)])
    for i, (prediction, size) in enumerate(results):
        assert prediction.predictions == [2.0 * i]
        assert prediction.probabilities == [[float(i), 1.0]]
        assert size == 8
    assert model.calls == [8, 8]


def test_a_batch_is_cut_at_max_batch_size_and_never_splits_a_task() -> None:
    model = Doubler()
    batcher = Batcher(model, max_batch_size=5, max_wait_ms=300)
    results = _many(batcher, [[[1.0], [2.0], [3.0]] for _ in range(4)])
    assert all(r[0].predictions == [2.0, 4.0, 6.0] for r in results)
    assert sorted(model.calls) == [3, 3, 3, 3]  # 3 + 3 > 5: each task alone


def test_a_lone_caller_waits_no_longer_than_max_wait() -> None:
    batcher = Batcher(Doubler(), max_batch_size=32, max_wait_ms=50)
    began = time.monotonic()
    prediction, size = batcher.predict([[1.0]], 5)
    assert (prediction.predictions, size) == ([2.0], 1)
    assert time.monotonic() - began < 0.5


def test_a_bad_row_fails_only_its_own_task() -> None:
    model = Doubler()
    batcher = Batcher(model, max_batch_size=8, max_wait_ms=200)
    results = _many(batcher, [[[1.0]], [[-1.0]], [[3.0]], [[4.0]]])
    assert isinstance(results[1], ValueError)
    assert [results[i][0].predictions for i in (0, 2, 3)] == [[2.0], [6.0], [8.0]]
    assert model.calls[0] == 4  # tried together first, then each on its own


def test_a_caller_gives_up_at_its_timeout() -> None:
    batcher = Batcher(Doubler(delay_s=1.0), max_batch_size=1, max_wait_ms=0)
    with pytest.raises(TimeoutError):
        batcher.predict([[1.0]], 0.1)
