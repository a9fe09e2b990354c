"""The one Celery app, built from settings and the registry.

Production runs on RabbitMQ (durable queues, persistent messages, publisher confirms); the
embedded default runs the same code on kombu's SQLAlchemy transport over SQLite.
"""

from asyncml.engine.app import Engine, make_celery

__all__ = ["Engine", "make_celery"]
