"""The one Celery app, built from settings and the registry.

Production runs on RabbitMQ (durable queues, persistent messages, publisher confirms); the
embedded default runs the same code on kombu's SQLAlchemy transport over SQLite.

``Engine`` and ``make_celery`` are imported on first use (PEP 562): importing a light
module of this package (``engine.config``) must not load the Celery app and its metrics,
which a worker may import only after choosing its metrics folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncml.engine.app import Engine, make_celery

__all__ = ["Engine", "make_celery"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from asyncml.engine import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
