"""The ``asyncml`` command: run the service's roles, and use it from a shell.

Exit codes: 0 ok, 1 a task failed, 2 the request was wrong (bad option or input, unknown
kind or id), 3 the service is unavailable.
"""

from asyncml.cli import demo, dlq, flower, keys, models, serve, tasks, webhooks
from asyncml.cli._common import app

__all__ = ["app", "demo", "dlq", "flower", "keys", "main", "models", "serve", "tasks", "webhooks"]


def main() -> None:
    app()
