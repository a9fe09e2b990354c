"""Dynamic batching inside a worker process: predictions that arrive close together run as one
call of the model, and each task still gets its own result.

The worker that serves model queues runs a pool of threads (``asyncml worker`` picks it for
model queues), so many tasks of one model are in flight in one process at once, each one an
ordinary Celery task with late acks. Each task hands its rows to the model's ``Batcher`` and
blocks; a batch is cut when it holds ``max_batch_size`` rows or ``max_wait_ms`` after its
first row arrived, the model runs once on all of it, and each task gets back its own slice.
A request that finds the model idle for longer than ``max_wait_ms`` runs at once: traffic that
sparse brings no company within the wait, which would only add to its latency (under load the
model is never idle that long, and batches form as before).
The task then stores its result and only then is its message acknowledged, exactly as for
any other kind: batching changes how the model is called, never how a task is acked.

One bad row must not fail its neighbours: if the batched call raises, each task of the batch
is predicted on its own, and only the ones that still fail get the error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from asyncml.models.loaders import Prediction, Predictor

log = logging.getLogger(__name__)


@dataclass
class _Request:
    rows: Sequence[Sequence[Any]]
    arrived: float
    done: Future[tuple[Prediction, int]] = field(default_factory=Future)


class Batcher:
    """Groups the rows of concurrent callers into calls of ``predictor.predict``.

    ``predict(rows)`` blocks until the batch holding ``rows`` has run and returns this
    caller's prediction and the number of rows in the call that made it.
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        name: str = "model",
        observe: Any = None,
    ) -> None:
        self.predictor = predictor
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait_s = max(0.0, max_wait_ms / 1000)
        self.name = name
        self._observe = observe  # called with each batch's row count (a metric)
        self._pending: list[_Request] = []
        self._idle_since = float("-inf")  # when the model's last call ended
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def predict(
        self, rows: Sequence[Sequence[Any]], timeout_s: float | None = None
    ) -> tuple[Prediction, int]:
        request = _Request(rows=rows, arrived=time.monotonic())
        with self._cond:
            self._pending.append(request)
            self._cond.notify()
        return request.done.result(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._predict(batch)
            except BaseException as exc:  # never let the batching thread die silently
                log.exception("batcher %s failed", self.name)
                for request in batch:
                    if not request.done.done():
                        request.done.set_exception(exc)
            finally:
                self._idle_since = time.monotonic()

    def _next_batch(self) -> list[_Request]:
        """Wait for a first request, then until the batch is full or its wait is over; no
        wait for a request that found the model idle for longer than the wait."""
        with self._cond:
            while not self._pending:
                self._cond.wait()
            first = self._pending[0].arrived
            idle = first - self._idle_since > self.max_wait_s
            deadline = first if idle else first + self.max_wait_s
            while self._rows_pending() < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Request] = []
            size = 0
            while self._pending:
                nxt = len(self._pending[0].rows)
                if batch and size + nxt > self.max_batch_size:
                    break  # a task's rows are never split across calls
                batch.append(self._pending.pop(0))
                size += nxt
            return batch

    def _rows_pending(self) -> int:
        return sum(len(r.rows) for r in self._pending)

    def _predict(self, batch: list[_Request]) -> None:
        table = [row for request in batch for row in request.rows]
        try:
            out = self.predictor.predict(table)
        except Exception:
            if len(batch) == 1:
                raise
            log.info(
                "batch of %d rows failed; predicting its %d tasks apart", len(table), len(batch)
            )
            for request in batch:
                try:
                    alone = self.predictor.predict(request.rows)
                except Exception as exc:
                    request.done.set_exception(exc)
                else:
                    self._record(len(request.rows))
                    request.done.set_result((alone, len(request.rows)))
            return
        self._record(len(table))
        start = 0
        for request in batch:
            end = start + len(request.rows)
            probabilities = None if out.probabilities is None else out.probabilities[start:end]
            part = Prediction(predictions=out.predictions[start:end], probabilities=probabilities)
            request.done.set_result((part, len(table)))
            start = end

    def _record(self, size: int) -> None:
        if self._observe is not None:
            self._observe(size)
