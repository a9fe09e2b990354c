"""Client commands: submit (one sub-command per kind), status, wait, watch, cancel, kinds."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer._click import Command, Context  # typer types its groups with its vendored click
from typer.core import TyperGroup

from asyncml.cli._common import (
    DEFAULT_URL,
    EXIT_FAILED,
    ApiKeyOpt,
    JsonOpt,
    UrlOpt,
    app,
    console,
    emit,
    fail,
    load_registry,
    schema_type,
)
from asyncml.client import Client, Task
from asyncml.errors import AsyncmlError
from asyncml.kinds import TaskKind
from asyncml.records import TaskEvent


class _KindCommands(TyperGroup):
    """One sub-command per kind of the registry the settings build (models included),
    made when the command line names it."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [kind.name for kind in load_registry()]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        registry = load_registry()
        if cmd_name not in registry:
            return None
        one = typer.Typer()
        _submit_command(one, registry.get(cmd_name))
        return typer.main.get_command(one)


submit_app = typer.Typer(
    cls=_KindCommands, help="Submit a task of one kind; one sub-command per kind."
)
app.add_typer(submit_app, name="submit")

# A person is waiting: retry a transient failure briefly, then say so (exit 3).
CLI_RETRIES = 2

WaitOpt = Annotated[
    float | None, typer.Option("--timeout", help="Give up waiting after this many seconds.")
]


def show(task: Task, as_json: bool) -> None:
    """Print a task; exit 1 when it failed, so scripts can tell."""
    data = task.model_dump(mode="json")
    if as_json:
        emit(data, True)
    else:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        colour = {"SUCCESS": "green", "FAILURE": "red"}.get(task.status.value, "yellow")
        table.add_row("id", task.id)
        table.add_row("kind", task.kind)
        table.add_row("status", f"[{colour}]{task.status.value}[/{colour}]")
        if isinstance(task.result, dict):
            for key, value in task.result.items():
                table.add_row(key, str(value))
        elif task.result is not None:
            table.add_row("result", str(task.result))
        if task.error is not None:
            table.add_row("error", f"{task.error.type}: {task.error.message}")
        console.print(table)
    if task.status.value == "FAILURE":
        raise typer.Exit(EXIT_FAILED)


@app.command()
def status(
    task_id: str,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    wait: Annotated[float, typer.Option(help="Long-poll up to this many seconds.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Show a task's state and result."""
    try:
        with Client(url, api_key=api_key, retries=CLI_RETRIES) as client:
            task = client.wait(task_id, timeout=wait) if wait else client.get(task_id)
    except AsyncmlError as exc:
        if wait and exc.type == "task_timeout":
            with Client(url, api_key=api_key, retries=CLI_RETRIES) as client:
                task = client.get(task_id)
        else:
            raise fail(exc, as_json) from exc
    show(task, as_json)


@app.command()
def wait(
    task_id: str,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    timeout: WaitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wait until a task is final (server long-poll) and show it."""
    try:
        with Client(url, api_key=api_key, retries=CLI_RETRIES) as client:
            task = client.wait(task_id, timeout=timeout)
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    show(task, as_json)


class WatchView:
    """What ``asyncml watch`` shows, from the task's events alone (no terminal needed to
    test it): a headline (its place in the queue and ETA, then its progress) and the lines
    printed as events come. On a terminal the headline is a live bar and only logs and the
    start are printed; elsewhere nothing redraws, so every change is a line of its own."""

    def __init__(self, task_id: str, *, live: bool) -> None:
        self.task_id = task_id
        self.live = live
        self.running = False
        self.place = "waiting for the task's first event"
        self.done: float = 0
        self.total: float | None = None
        self.step = ""

    def apply(self, event: TaskEvent) -> list[str]:
        """Take one event in; the lines (rich markup) to print for it."""
        data = event.data
        at = event.at.astimezone().strftime("%H:%M:%S")
        if event.type == "queued":
            eta = data.get("eta_s")
            eta_text = "ETA unknown yet" if eta is None else f"ETA {eta:.1f} s"
            self.place = f"queued: position {data['position']}, {data['ahead']} ahead, {eta_text}"
            return [] if self.live else [f"{at} {self.place}"]
        if event.type == "started":
            self.running = True
            return [
                f"{at} started on {data.get('worker') or 'a worker'}, attempt {data.get('attempt')}"
            ]
        if event.type == "progress":
            self.done, self.total = data.get("done") or 0, data.get("total")
            self.step = data.get("message") or ""
            return (
                [] if self.live else [f"{at} progress {self._steps()} {escape(self.step)}".rstrip()]
            )
        if event.type == "log":
            level = str(data.get("level", "info"))
            colour = {"warning": "yellow", "error": "red", "critical": "red"}.get(level, "dim")
            message = escape(str(data.get("message", "")))
            return [f"{at} [{colour}]{level:<7}[/{colour}] {message}"]
        if event.type == "output":
            partial = json.dumps(data.get("partial"), separators=(",", ":"), default=str)
            return [] if self.live else [f"{at} output {escape(partial)}"]
        return []  # completed: the caller shows the final record

    def headline(self) -> str:
        if not self.running:
            return self.place
        return f"running {self._steps()} {escape(self.step)}".rstrip()

    def _steps(self) -> str:
        return f"{self.done:g}" if self.total is None else f"{self.done:g}/{self.total:g}"


def watch_task(client: Client, task_id: str, timeout: float | None) -> Task:
    """Follow a task's events to its end, showing them (see ``WatchView``); its final record."""
    view = WatchView(task_id, live=console.is_terminal)
    if not view.live:

        def print_lines(event: TaskEvent) -> None:
            for line in view.apply(event):
                console.print(line, highlight=False)

        return client.wait(task_id, timeout=timeout, on_event=print_lines)
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with bar:
        row = bar.add_task(view.headline(), total=None)

        def redraw(event: TaskEvent) -> None:
            for line in view.apply(event):
                bar.console.print(line, highlight=False)
            known = view.running and view.total is not None
            bar.update(
                row,
                description=view.headline(),
                total=view.total if known else None,
                completed=view.done if known else 0,
            )
            bar.refresh()  # each change drawn as it comes, not at the next tick

        return client.wait(task_id, timeout=timeout, on_event=redraw)


def _print_event(event: TaskEvent) -> None:
    sys.stdout.write(json.dumps(event.wire(), default=str) + "\n")
    sys.stdout.flush()


@app.command()
def watch(
    task_id: str,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    timeout: WaitOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Each event as a JSON line (the stream's data).")
    ] = False,
) -> None:
    """Follow a task live: its queue position and ETA, progress, logs, then its result."""
    try:
        with Client(url, api_key=api_key, retries=CLI_RETRIES) as client:
            if as_json:
                task = client.wait(task_id, timeout=timeout, on_event=_print_event)
            else:
                task = watch_task(client, task_id, timeout)
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        if task.status.value == "FAILURE":
            raise typer.Exit(EXIT_FAILED)
        return
    show(task, as_json)


@app.command()
def cancel(
    task_id: str, url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel a task that has not started yet."""
    try:
        with Client(url, api_key=api_key, retries=CLI_RETRIES) as client:
            task = client.cancel(task_id)
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    show(task, as_json)


@app.command()
def kinds(url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """List the task kinds the server runs, with their inputs."""
    try:
        with Client(url, api_key=api_key, retries=CLI_RETRIES) as client:
            declared = client.kinds()
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit(declared, True)
        return
    table = Table("kind", "queue", "inputs", "description")
    for kind in declared:
        schema = kind["input_schema"]
        required = set(schema.get("required", []))
        inputs = ", ".join(
            f"{name}{'' if name in required else '?'}: {schema_type(prop)}"
            for name, prop in schema.get("properties", {}).items()
        )
        table.add_row(kind["name"], kind["queue"], inputs, kind["description"])
    console.print(table)


def _submit_command(target: typer.Typer, kind: TaskKind[Any, Any]) -> None:
    """``asyncml submit KIND --field value``: options made from the kind's input model."""
    fields = kind.input_model.model_fields

    def command(**options: Any) -> None:
        url, api_key, wait_, timeout, as_json = (
            options.pop(name) for name in ("url", "api_key", "wait", "timeout", "as_json")
        )
        inputs = {name: options[name] for name in fields if options[name] is not None}
        try:
            with Client(url, api_key=api_key, retries=CLI_RETRIES) as client:
                task = client.submit(kind.name, **inputs)
                if wait_ and as_json:
                    task = client.wait(task.id, timeout=timeout)
                elif wait_:
                    task = watch_task(client, task.id, timeout)
        except AsyncmlError as exc:
            raise fail(exc, as_json) from exc
        show(task, as_json)

    params = []
    for name, info in fields.items():
        annotation: Any = bool if info.annotation is bool else str
        if not info.is_required():
            annotation = annotation | None
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[
                    annotation,
                    typer.Option(f"--{name.replace('_', '-')}", help=info.description),
                ],
                default=... if info.is_required() else None,
            )
        )
    keyword = inspect.Parameter.KEYWORD_ONLY
    params += [
        inspect.Parameter("url", keyword, annotation=UrlOpt, default=DEFAULT_URL),
        inspect.Parameter("api_key", keyword, annotation=ApiKeyOpt, default=None),
        inspect.Parameter(
            "wait",
            keyword,
            annotation=Annotated[
                bool,
                typer.Option("--wait", help="Follow the task live (as watch) to its result."),
            ],
            default=False,
        ),
        inspect.Parameter("timeout", keyword, annotation=WaitOpt, default=None),
        inspect.Parameter("as_json", keyword, annotation=JsonOpt, default=False),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # for typer
    command.__doc__ = kind.description or f"Submit a {kind.name} task."
    target.command(kind.name)(command)
