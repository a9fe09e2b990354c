"""Task records: where the API and the workers agree on a task's state and result.

Celery's own result backend is not used: it cannot tell an unknown id from a pending one,
keeps no submitted/started times, and cancelling through it needs broadcast, which the
embedded broker lacks. The store below is the result backend: Redis in production,
SQLite in the embedded default.
"""

from __future__ import annotations

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


__all__ = [
    "FINAL_STATUSES",
    "AsyncTaskStore",
    "Callback",
    "Cancelled",
    "Delivery",
    "ErrorBody",
    "TaskRecord",
    "TaskStatus",
    "TaskStore",
    "open_async_store",
    "open_store",
    "utcnow",
]
