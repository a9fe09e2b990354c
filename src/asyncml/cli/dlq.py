"""``asyncml dlq``: the dead-letter queue, read and replayed straight from the task store.

Like ``asyncml worker``, these commands talk to the store (and, to replay, the broker)
named by the settings, not to the HTTP API: they are an operator's tools, and work while
the API is down. The engine is imported only when a replay needs it (it loads
prometheus-client, which a worker must import only after choosing its metrics folder).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from asyncml.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    JsonOpt,
    app,
    console,
    emit,
    err_console,
    exit_for,
    fail,
    load_settings,
)
from asyncml.errors import AsyncmlError, ServiceUnavailable, TaskNotFound
from asyncml.registry import build_registry
from asyncml.settings import Settings
from asyncml.store import TaskStore, open_async_store, open_store
from asyncml.store.dead_letters import DeadLetter

if TYPE_CHECKING:
    from asyncml.submission import Submitter

log = logging.getLogger(__name__)

dlq_app = typer.Typer(
    help="The dead-letter queue: tasks whose worker died on every attempt (worker_lost).",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")

_PAGE = 500

IdArg = Annotated[str | None, typer.Argument(help="The task id of one entry.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every entry.")]


@contextmanager
def _opened(settings: Settings) -> Iterator[TaskStore]:
    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


def _one_or_all(task_id: str | None, every: bool) -> None:
    if (task_id is None) == (not every):
        err_console.print("give one task id or --all (not both)")
        raise typer.Exit(EXIT_USAGE)


def _all_entries(store: TaskStore) -> list[DeadLetter]:
    entries: list[DeadLetter] = []
    while page := store.dead_letter_list(_PAGE, offset=len(entries)):
        entries += page
        if len(page) < _PAGE:
            break
    return entries


def _entry(store: TaskStore, task_id: str) -> DeadLetter:
    entry = store.dead_letter_get(task_id)
    if entry is None:
        raise TaskNotFound(f"task {task_id} is not in the dead-letter queue")
    return entry


async def replay(store: TaskStore, submitter: Submitter, entry: DeadLetter) -> str:
    """Submit the entry's task again as a new task; its id. The old record is not touched:
    task state only moves forward, so the old id stays FAILURE.

    The entry is claimed first (removed; only one caller can), so two operators replaying
    at once make one task, not two. Then the task goes through the one submission path
    (``asyncml.submission``), as from the API; if that fails, the entry is put back, so a
    failed replay loses nothing.
    """
    kind = submitter.engine.registry.get(entry.kind)  # an unknown kind changes nothing
    if not store.dead_letter_remove(entry.task_id):
        raise TaskNotFound(f"task {entry.task_id} left the dead-letter queue meanwhile")
    try:
        record = await submitter.resubmit(
            kind, entry.payload, owner=entry.owner or "", callback=entry.callback
        )
    except BaseException:
        _put_back(store, entry)
        raise
    return record.id


async def _replay_all(
    settings: Settings, store: TaskStore, entries: list[DeadLetter], as_json: bool
) -> tuple[list[dict[str, str]], list[tuple[str, AsyncmlError]]]:
    """Replay each entry through one engine and one async store (bound to this loop)."""
    from asyncml.engine import Engine
    from asyncml.submission import Submitter

    replayed: list[dict[str, str]] = []
    failed: list[tuple[str, AsyncmlError]] = []
    engine = Engine(settings, build_registry(settings))
    async_store = open_async_store(settings)
    try:
        submitter = Submitter(settings, engine, async_store)
        for entry in entries:
            try:
                new_id = await replay(store, submitter, entry)
            except AsyncmlError as exc:
                failed.append((entry.task_id, exc))
                if not as_json:
                    err_console.print(
                        f"[red]{entry.task_id}: {exc.type}:[/red] {exc.message}",
                        highlight=False,
                    )
                continue
            replayed.append({"task_id": entry.task_id, "new_task_id": new_id})
            if not as_json:
                console.print(f"{entry.task_id} -> {new_id}", highlight=False)
    finally:
        await async_store.close()
        engine.close()
    return replayed, failed


def _put_back(store: TaskStore, entry: DeadLetter) -> None:
    try:
        store.dead_letter_add(entry)
    except ServiceUnavailable:
        # The last copy of the task's input: hand it to the operator rather than lose it.
        err_console.print(
            f"[red]could not put task {entry.task_id} back in the dead-letter queue; "
            "its entry:[/red]",
            highlight=False,
        )
        sys.stderr.write(entry.model_dump_json() + "\n")


@dlq_app.command("list")
def list_entries(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many, oldest first.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List the entries (reading consumes nothing)."""
    settings = load_settings()
    try:
        with _opened(settings) as store:
            entries = store.dead_letter_list(limit)
            total = store.dead_letter_count()
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit([entry.model_dump(mode="json") for entry in entries], True)
        return
    table = Table("task id", "kind", "attempts", "dead at", "error")
    for entry in entries:
        table.add_row(
            entry.task_id,
            entry.kind,
            str(entry.attempts),
            entry.dead_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            f"{entry.error.type}: {entry.error.message}",
        )
    console.print(table)
    if total > len(entries):
        console.print(f"{len(entries)} of {total} shown (--limit for more)")


@dlq_app.command()
def retry(task_id: IdArg = None, every: AllOpt = False, as_json: JsonOpt = False) -> None:
    """Replay entries as new tasks (new ids); each replayed entry leaves the queue."""
    _one_or_all(task_id, every)
    settings = load_settings()
    try:
        with _opened(settings) as store:
            entries = [_entry(store, task_id)] if task_id is not None else _all_entries(store)
            replayed, failed = asyncio.run(_replay_all(settings, store, entries, as_json))
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        failures = [{"task_id": old, **exc.to_body()} for old, exc in failed]
        sys.stdout.write(json.dumps({"replayed": replayed, "failed": failures}) + "\n")
    elif not replayed and not failed:
        console.print("the dead-letter queue is empty")
    raise typer.Exit(exit_for(failed[0][1]) if failed else EXIT_OK)


@dlq_app.command()
def purge(
    task_id: IdArg = None,
    every: AllOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (with --all).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove entries for good, without replaying them (--all asks first)."""
    _one_or_all(task_id, every)
    settings = load_settings()
    try:
        with _opened(settings) as store:
            if task_id is not None:
                if not store.dead_letter_remove(task_id):
                    raise TaskNotFound(f"task {task_id} is not in the dead-letter queue")
                purged = 1
            elif (count := store.dead_letter_count()) == 0:
                purged = 0  # nothing to ask about: an empty queue is not a refusal
            else:
                if not yes and not _confirmed(count):
                    err_console.print("nothing purged")
                    raise typer.Exit(EXIT_USAGE)
                purged = store.dead_letter_purge()
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit({"purged": purged}, True)
    elif purged == 0 and task_id is None:
        console.print("the dead-letter queue is empty; nothing to purge")
    else:
        console.print(f"purged {purged} entr{'y' if purged == 1 else 'ies'}")


def _confirmed(count: int) -> bool:
    try:
        return typer.confirm(f"Remove all {count} entries of the dead-letter queue for good?")
    except typer.Abort:  # no answer (end of input)
        return False
