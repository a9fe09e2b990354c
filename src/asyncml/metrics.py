"""Every Prometheus collector, defined once.

Workers run tasks in prefork children, so their metrics use prometheus-client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` must be set before this module is first
imported (prometheus-client picks its storage at import; ``asyncml worker`` and ``asyncml
up`` set it) and the exporter sums the children's files. The API exports its own series,
the queue depths it reads from the broker at scrape time, and, under ``asyncml up`` (one
folder shared by all processes), the workers' too.

This module reads no environment: the entry point that set the folder names it here with
``share_between_processes`` (the API's processes) or passes it to ``serve_worker_metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "asyncml_http_requests_total",
    "HTTP requests answered by the API.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "asyncml_http_request_duration_seconds",
    "Time the API took to answer, by route template.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
TASKS_SUBMITTED = Counter(
    "asyncml_tasks_submitted_total", "Tasks accepted and queued, by kind.", ["kind"]
)
TASKS_FINISHED = Counter(
    "asyncml_tasks_finished_total",
    "Tasks that reached a final state in a worker, by kind and state.",
    ["kind", "status"],
)
TASK_RUN = Histogram(
    "asyncml_task_run_seconds",
    "Time a worker spent running a task, measured by the worker.",
    ["kind"],
    buckets=_TASK_BUCKETS,
)
MODEL_BATCH_SIZE = Histogram(
    "asyncml_model_batch_size",
    "Rows in each call of a model (dynamic batching groups concurrent tasks).",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
MODEL_PREDICTIONS = Counter(
    "asyncml_model_predictions",
    "Prediction tasks answered, by model and the version that answered (the canary split).",
    ["model", "version"],
)
TASKS_DEAD_LETTERED = Counter(
    "asyncml_tasks_dead_lettered_total",
    "Tasks whose worker died on every attempt, ended as worker_lost and copied to the "
    "dead-letter queue, by kind.",
    ["kind"],
)
TASK_QUEUE_WAIT = Histogram(
    "asyncml_task_queue_wait_seconds",
    "Time from submission to a worker starting the task, measured by the worker.",
    ["kind"],
    buckets=_TASK_BUCKETS,
)

CONNECTIONS_REFUSED = Counter(
    "asyncml_http_connections_refused_total",
    "Connections the API answered with 503 and closed at once, by the cap they were past: "
    "client (connections per client address) or process (connections per API process).",
    ["cap"],
)


class QueueDepth(Collector):
    """Reads each queue's waiting messages from the broker when scraped."""

    def __init__(self, depths: Callable[[], dict[str, int]]) -> None:
        self._depths = depths

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "asyncml_queue_depth", "Messages waiting in each queue of the broker.", labels=["queue"]
        )
        try:
            depths = self._depths()
        except Exception:  # a down broker: no sample, not a failed scrape
            depths = {}
        for queue, depth in sorted(depths.items()):
            family.add_metric([queue], depth)
        yield family


class ApiWaiters(Collector):
    """What the scraped API process holds for clients that wait: event streams open, and
    tasks its requests wait on (long-polls and streams). In-process counts, read at
    scrape time: each API process reports its own."""

    def __init__(self, streams: Callable[[], int], watched: Callable[[], int]) -> None:
        self._streams = streams
        self._watched = watched

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "asyncml_event_streams_open",
            "Task event streams (GET /v1/tasks/{id}/events) open in this API process.",
            value=self._streams(),
        )
        yield GaugeMetricFamily(
            "asyncml_tasks_watched",
            "Tasks that requests of this API process are waiting on (long-polls, streams).",
            value=self._watched(),
        )


class StoreDurable(Collector):
    """The task store's persistence as read at scrape time (by the caller, which may await):
    ``durable`` True 1, False 0, None (the server would not say) -1; no sample when it was
    not read (``ASYNCML_STORE_DURABILITY=off``, or the store is down)."""

    def __init__(self, durable: bool | None, *, read: bool) -> None:
        self._durable = durable
        self._read = read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "asyncml_store_durable",
            "1 if the task store keeps accepted tasks across a crash of its server "
            "(Redis appendonly yes; SQLite), 0 if not, -1 if the server would not say.",
        )
        if self._read:
            family.add_metric([], -1 if self._durable is None else int(self._durable))
        yield family


_shared_folder: Path | None = None  # set once by the entry point; see the module's docstring


def share_between_processes(folder: Path | None) -> None:
    """Export every process's series from ``folder`` (the ``PROMETHEUS_MULTIPROC_DIR`` the
    entry point set before prometheus-client was imported); ``None``: this process's own.

    A process-wide switch, like prometheus-client's own storage choice that it follows.
    """
    global _shared_folder
    _shared_folder = folder


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition: this process's series, or every process's in multiprocess mode."""
    registry = CollectorRegistry()
    if _shared_folder is not None:
        _multiprocess.MultiProcessCollector(registry, path=str(_shared_folder))  # type: ignore[no-untyped-call]  # untyped in the library
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    payload = generate_latest(registry)
    for collector in extra:
        own = CollectorRegistry()
        own.register(collector)
        payload += generate_latest(own)
    return payload


def serve_worker_metrics(port: int, folder: Path, host: str = "0.0.0.0") -> None:  # noqa: S104  # scraped remotely
    """The worker's exporter: a thread in the main process summing its children's files."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]  # untyped in the library
    start_http_server(port, addr=host, registry=registry)


def mark_dead(pid: int) -> None:
    if _shared_folder is not None:
        _multiprocess.mark_process_dead(pid, path=str(_shared_folder))  # type: ignore[no-untyped-call]  # untyped in the library
