"""Client commands: submit (one sub-command per kind), status, wait, cancel, kinds."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer
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
)
from asyncml.client import Client, Task
from asyncml.errors import AsyncmlError
from asyncml.kinds import TaskKind


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
            f"{name}{'' if name in required else '?'}: {prop.get('type', prop.get('format', ''))}"
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
                if wait_:
                    task = client.wait(task.id, timeout=timeout)
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
            annotation=Annotated[bool, typer.Option("--wait", help="Wait for the result.")],
            default=False,
        ),
        inspect.Parameter("timeout", keyword, annotation=WaitOpt, default=None),
        inspect.Parameter("as_json", keyword, annotation=JsonOpt, default=False),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # for typer
    command.__doc__ = kind.description or f"Submit a {kind.name} task."
    target.command(kind.name)(command)
