"""A worker says it is alive, in the task store, every ``HEARTBEAT_S``: so queue ETAs know
how many slots consume a queue, and the dashboard lists workers of every kind (prefork,
thread-pool model workers, embedded), which Celery's own events cannot do on the embedded
broker. A worker that dies stops beating; readers drop it after three missed beats."""

from __future__ import annotations

import logging
import os
import socket
import threading

from asyncml.records import WorkerInfo, utcnow
from asyncml.settings import Settings
from asyncml.store import open_store
from asyncml.store.base import HEARTBEAT_S

log = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread of the worker's main process, with a store of its own."""

    def __init__(
        self, settings: Settings, queues: tuple[str, ...], concurrency: int, pool: str
    ) -> None:
        self._settings = settings
        self._stop = threading.Event()
        self.info = WorkerInfo(
            name=f"{socket.gethostname()}/{os.getpid()}",
            queues=list(queues),
            concurrency=concurrency,
            pool=pool,
            pid=os.getpid(),
            seen_at=utcnow(),
        )
        self._thread = threading.Thread(target=self._run, name="asyncml-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S)

    def _run(self) -> None:
        store = open_store(self._settings)
        try:
            while True:
                try:
                    store.heartbeat(self.info.model_copy(update={"seen_at": utcnow()}))
                except Exception as exc:  # the store is away: beat again next time
                    log.warning("worker heartbeat not stored: %r", exc)
                if self._stop.wait(HEARTBEAT_S):
                    break
            try:
                store.worker_gone(self.info.name)
            except Exception as exc:
                log.warning("worker %s not removed from the store: %r", self.info.name, exc)
        finally:
            store.close()
