"""``asyncml webhooks``: the notices given up on, and a second chance for one.

Like ``asyncml dlq``, these talk to the task store (and, to re-send, the broker) named by
the settings, not to the HTTP API: an operator's tools. The engine is imported only when
a re-send needs it (it loads prometheus-client, which a worker must import only after
choosing its metrics folder).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from asyncml.cli._common import JsonOpt, app, console, emit, fail, load_settings
from asyncml.errors import AsyncmlError, InputInvalid
from asyncml.fetch import origin
from asyncml.records import Event
from asyncml.registry import build_registry
from asyncml.store import open_store

webhooks_app = typer.Typer(
    help="Webhook notices that failed for good: list them, send one again.",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("failed")
def failed(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many, newest first.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List the notices whose delivery failed (all attempts spent, or refused)."""
    settings = load_settings()
    store = open_store(settings)
    try:
        found = store.failed_deliveries(limit)
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    finally:
        store.close()
    if as_json:
        emit(
            [
                {
                    "task_id": f.task.id,
                    "kind": f.task.kind,
                    "event": f.event,
                    "url": None if f.task.callback is None else origin(f.task.callback.url),
                    **f.delivery.model_dump(mode="json"),
                }
                for f in found
            ],
            True,
        )
        return
    if not found:
        console.print("no failed webhook deliveries")
        return
    table = Table("task id", "kind", "event", "to", "attempts", "last error", "failed at")
    for f in found:
        table.add_row(
            f.task.id,
            f.task.kind,
            f.event,
            "" if f.task.callback is None else origin(f.task.callback.url),
            str(f.delivery.attempts),
            f.delivery.last_error or f"HTTP {f.delivery.last_status}",
            "" if f.failed_at is None else f.failed_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
    console.print(table)


@webhooks_app.command("resend")
def resend(
    task_id: Annotated[str, typer.Argument(help="The task whose notice failed.")],
    event: Annotated[
        str, typer.Option("--event", help="Which notice: completed or started.")
    ] = "completed",
    as_json: JsonOpt = False,
) -> None:
    """Send a failed notice again, with its full retry schedule."""
    if event not in ("completed", "started"):
        raise fail(InputInvalid(f"--event: completed or started, not {event!r}"), as_json)
    settings = load_settings()
    store = open_store(settings)
    try:
        from asyncml.engine import Engine

        engine = Engine(settings, build_registry(settings))
        try:
            chosen: Event = "completed" if event == "completed" else "started"
            engine.notices.resend(store, task_id, chosen)
        finally:
            engine.close()
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    finally:
        store.close()
    if as_json:
        emit({"task_id": task_id, "event": event, "state": "pending"}, True)
    else:
        console.print(f"the {event} notice of task {task_id} is queued again", highlight=False)
