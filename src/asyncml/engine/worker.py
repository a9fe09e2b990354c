"""A Celery worker built from the settings and the registry, and run.

``plan_worker`` decides what a worker serves and how (queues, pool, processes or threads);
``run_worker`` builds the Celery app for it and runs it until it stops. ``asyncml worker``
is a thin adapter over the two.

Logging: the caller has configured it (``asyncml.logging``) before this runs. Celery would
add handlers and formatters of its own (on the root logger, ``celery.task`` and billiard's
logger, whose pool-crash lines were plain text under ``ASYNCML_LOG_FORMAT=json``);
``_keep_our_logging`` answers Celery's ``setup_logging`` signal, which makes it install
none, and sends billiard's lines to the root handler. Celery's banner and its shutdown
notice are printed, not logged: with JSON logs the banner is off (the same facts are
logged as one line) and the notice is written as a JSON line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from celery import Celery
from celery.signals import setup_logging

from asyncml.engine import make_celery
from asyncml.engine.config import all_queues, broker_url
from asyncml.engine.heartbeat import Heartbeat
from asyncml.errors import InputInvalid
from asyncml.logging import format_line
from asyncml.registry import Registry
from asyncml.settings import Settings, redact_url
from asyncml.store import check_durability_at_start

log = logging.getLogger(__name__)

Pool = Literal["prefork", "threads"]
POOL_CHOICES = ("auto", "prefork", "threads")


@dataclass(frozen=True)
class WorkerPlan:
    queues: tuple[str, ...]
    pool: Pool
    concurrency: int  # processes (prefork) or threads


def plan_worker(
    settings: Settings,
    registry: Registry,
    *,
    queues: Sequence[str] | None = None,
    concurrency: int | None = None,
    pool: str = "auto",
) -> WorkerPlan:
    """Raises ``InputInvalid`` for a queue no kind uses or an unknown pool.

    ``auto`` picks threads when every queue is a model queue: predictions batch across the
    threads of one process; anything else runs one task per process (CPU-bound work, hard
    time limits that kill the process).
    """
    from asyncml.models import model_queues

    known = all_queues(registry)
    chosen = [q for q in (queues or known) if q]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise InputInvalid(f"unknown queue(s): {', '.join(unknown)}; known: {known}")
    if pool not in POOL_CHOICES:
        raise InputInvalid(f"the pool must be auto, prefork or threads, not {pool!r}")
    chosen_pool: Pool
    if pool == "auto":
        chosen_pool = "threads" if set(chosen) <= model_queues(registry) else "prefork"
    else:
        chosen_pool = "threads" if pool == "threads" else "prefork"
    if chosen_pool == "threads":
        n = concurrency or settings.models_worker_threads
    else:
        n = concurrency or settings.worker_concurrency or os.cpu_count() or 1
    return WorkerPlan(tuple(chosen), chosen_pool, n)


def run_worker(
    settings: Settings, registry: Registry, plan: WorkerPlan, *, metrics_folder: Path
) -> None:
    """Blocks until the worker stops. ``metrics_folder`` is the prometheus multiprocess
    folder the entry point set up before prometheus-client was imported."""
    celery = build_worker_app(settings, registry, plan)
    if settings.worker_metrics_port:
        from asyncml.metrics import serve_worker_metrics

        serve_worker_metrics(settings.worker_metrics_port, metrics_folder)
    _keep_our_logging(json=settings.log_format == "json")
    argv = [
        "worker",
        "--queues",
        ",".join(plan.queues),
        "--concurrency",
        str(plan.concurrency),
        "--pool",
        plan.pool,
        "--hostname",
        f"asyncml-{'-'.join(plan.queues)}-{os.getpid()}@%h",
        "--loglevel",
        settings.log_level,
        "--without-gossip",
        "--without-mingle",
    ]
    if settings.embedded_broker:
        argv.append("--without-heartbeat")
    if settings.log_format == "json":
        argv.insert(0, "--quiet")  # the banner is text on stdout; its facts are logged below
        log.info(
            "starting a worker",
            extra={
                "queues": list(plan.queues),
                "pool": plan.pool,
                "concurrency": plan.concurrency,
                "broker": redact_url(broker_url(settings)),
                "kinds": sorted(k.name for k in registry if k.queue in plan.queues),
            },
        )
    check_durability_at_start(settings, log)
    heartbeat = Heartbeat(settings, plan.queues, plan.concurrency, plan.pool)
    heartbeat.start()
    try:
        celery.worker_main(argv)
    finally:
        heartbeat.stop()


def build_worker_app(settings: Settings, registry: Registry, plan: WorkerPlan) -> Celery:
    celery = make_celery(settings, registry)
    if plan.pool == "threads":
        from asyncml.models import enable_batching

        enable_batching(settings.models_batching)
        # Celery's task-event dispatcher is shared by the pool's threads and its mutex
        # deadlocks against the event loop under load (seen: every thread and the main
        # loop waiting in EventDispatcher.flush, 64 messages unacked, the worker stalled).
        # A thread-pool worker sends no task events; Flower still sees it (heartbeats).
        celery.conf.worker_send_task_events = False
    if settings.models_preload:
        from asyncml.models import preload_in_worker_processes

        preload_in_worker_processes(registry, plan.queues)
    return celery


def _keep_our_logging(*, json: bool) -> None:
    """Every line of the worker and its pool through the one root handler."""
    import celery.apps.worker

    # Connected, this receiver makes Celery skip its own set-up: no handler or formatter
    # of Celery's on the root logger, on ``celery.task`` (which stops propagating) or on
    # billiard's logger; ``worker_log_format`` and ``after_setup_logger`` never apply.
    setup_logging.connect(_logging_is_configured, weak=False, dispatch_uid="asyncml.logging")
    if json:
        celery.apps.worker.safe_say = _say_as_json  # type: ignore[attr-defined]  # not in the stubs


def _logging_is_configured(**_: Any) -> None:
    """The process configured logging before the worker started (``asyncml.logging``).

    billiard logs a pool process's death ("Process 'ForkPoolWorker-1' pid:... exited with
    'signal 9 (SIGKILL)'") on a logger that does not propagate (Celery gave it a handler
    of its own, at ERROR unless MP_LOG is set). Celery has just reset that logger; made
    again here, billiard keeps it, and it propagates to the root handler.
    """
    import billiard.util

    pool_log = billiard.util.get_logger()
    pool_log.propagate = True
    pool_log.setLevel(logging.WARNING)


def _say_as_json(msg: str, f: IO[str] | None = sys.__stderr__) -> None:
    """Celery's ``safe_say`` (its shutdown notices, written from a signal handler) as a
    JSON line: the same formatter, no logging lock, one ``os.write``."""
    line = format_line("celery.apps.worker", logging.WARNING, msg.strip()) + "\n"
    try:
        os.write((f or sys.__stderr__ or sys.stderr).fileno(), line.encode())
    except (OSError, ValueError):  # like Celery's: losing a notice must not stop a shutdown
        pass
