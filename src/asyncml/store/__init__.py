"""Task records: where the API and the workers agree on a task's state and result.

Celery's own result backend is not used: it cannot tell an unknown id from a pending one,
keeps no submitted/started times, and cancelling through it needs broadcast, which the
embedded broker lacks. The store below is the result backend: Redis in production,
SQLite in the embedded default.
"""

from __future__ import annotations

import logging

from asyncml.records import (
    FINAL_STATUSES,
    Callback,
    Delivery,
    ErrorBody,
    TaskRecord,
    TaskStatus,
    utcnow,
)
from asyncml.settings import Settings
from asyncml.store.base import AsyncTaskStore, Cancelled, TaskStore
from asyncml.store.durability import (
    DurabilityMode,
    StoreDurability,
    check_at_start,
    check_at_start_async,
    log_durability,
    refuses_readiness,
)


def open_store(settings: Settings) -> TaskStore:
    if settings.result_backend_url is None:
        from asyncml.store.sqlite import SqliteTaskStore

        return SqliteTaskStore(settings.store_path(), ttl_s=settings.result_ttl_s)
    from asyncml.store.redis import RedisTaskStore

    return RedisTaskStore(
        settings.result_backend_url.get_secret_value(), ttl_s=settings.result_ttl_s
    )


def open_async_store(settings: Settings) -> AsyncTaskStore:
    if settings.result_backend_url is None:
        from asyncml.store.sqlite import AsyncSqliteTaskStore, SqliteTaskStore

        sync = SqliteTaskStore(settings.store_path(), ttl_s=settings.result_ttl_s)
        return AsyncSqliteTaskStore(sync)
    from asyncml.store.redis import AsyncRedisTaskStore

    return AsyncRedisTaskStore(
        settings.result_backend_url.get_secret_value(), ttl_s=settings.result_ttl_s
    )


def check_durability_at_start(settings: Settings, log: logging.Logger) -> None:
    """For a process that keeps no store open (a worker's main process: its forked
    children must not inherit a connection), so the store is opened and closed here."""
    if settings.store_durability == "off":
        return
    store = open_store(settings)
    try:
        check_at_start(store, settings.store_durability, log)
    finally:
        store.close()


__all__ = [
    "FINAL_STATUSES",
    "AsyncTaskStore",
    "Callback",
    "Cancelled",
    "Delivery",
    "DurabilityMode",
    "ErrorBody",
    "StoreDurability",
    "TaskRecord",
    "TaskStatus",
    "TaskStore",
    "check_at_start",
    "check_at_start_async",
    "check_durability_at_start",
    "log_durability",
    "open_async_store",
    "open_store",
    "refuses_readiness",
    "utcnow",
]
