"""The ``asyncml`` command: run the service's roles and try it by hand.

Exit codes: 0 ok, 1 the task failed, 2 the request was wrong (bad option or input, unknown
kind or id), 3 the service is unavailable.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from asyncml.errors import (
    AsyncmlError,
    InputInvalid,
    ServiceUnavailable,
    TaskNotFound,
    UnknownKind,
)
from asyncml.kinds import TaskKind
from asyncml.registry import default_registry
from asyncml.settings import Settings, redact_url

EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3

app = typer.Typer(
    name="asyncml",
    help="Asynchronous inference service: API, workers and a client.",
    no_args_is_help=True,
    add_completion=False,
)
submit_app = typer.Typer(help="Submit a task of one kind; one sub-command per kind.")
app.add_typer(submit_app, name="submit")
console = Console()
err_console = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="ASYNCML_URL", help="Base URL of the API.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the bad variable
        err_console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc


def _fail(exc: AsyncmlError) -> typer.Exit:
    err_console.print(f"[red]{exc.type}:[/red] {exc.message}", highlight=False)
    if isinstance(exc, ServiceUnavailable):
        return typer.Exit(EXIT_UNAVAILABLE)
    if isinstance(exc, InputInvalid | UnknownKind | TaskNotFound):
        return typer.Exit(EXIT_USAGE)
    return typer.Exit(EXIT_FAILED)


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        console.print_json(data=data)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Listen address [ASYNCML_API_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [ASYNCML_API_PORT].")] = None,
    workers: Annotated[int, typer.Option(help="API processes.")] = 1,
) -> None:
    """Run the HTTP API."""
    import uvicorn

    from asyncml.api.app import create_app
    from asyncml.logging import configure_logging

    settings = _settings()
    configure_logging(settings, "api")
    options: dict[str, Any] = {
        "host": host or settings.api_host,
        "port": port if port is not None else settings.api_port,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
    }
    if workers > 1:
        uvicorn.run("asyncml.api.app:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)


@app.command()
def worker(
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues; default: every queue.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes [ASYNCML_WORKER_CONCURRENCY].")
    ] = None,
) -> None:
    """Run a Celery worker for some or all queues."""
    from asyncml.engine import make_celery
    from asyncml.logging import configure_logging

    settings = _settings()
    configure_logging(settings, "worker")
    registry = default_registry()
    chosen = [q.strip() for q in (queues or ",".join(registry.queues)).split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(registry.queues))
    if unknown:
        err_console.print(f"unknown queue(s): {', '.join(unknown)}; known: {registry.queues}")
        raise typer.Exit(EXIT_USAGE)
    n = concurrency or settings.worker_concurrency or os.cpu_count() or 1
    celery = make_celery(settings, registry)
    argv = [
        "worker",
        "--queues",
        ",".join(chosen),
        "--concurrency",
        str(n),
        "--hostname",
        f"asyncml-{'-'.join(chosen)}-{os.getpid()}@%h",
        "--loglevel",
        settings.log_level,
        "--without-gossip",
        "--without-mingle",
    ]
    if settings.embedded_broker:
        argv.append("--without-heartbeat")
    celery.worker_main(argv)


@app.command()
def up(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes [ASYNCML_WORKER_CONCURRENCY].")
    ] = None,
) -> None:
    """Run the API and a worker for every queue, supervised; Ctrl-C stops all of it."""
    from asyncml.logging import configure_logging
    from asyncml.supervisor import Child, Supervisor, python_argv

    settings = _settings()
    configure_logging(settings, "up")
    worker_argv = python_argv("worker")
    if concurrency:
        worker_argv += ["--concurrency", str(concurrency)]
    api_child = Child("api", python_argv("api"))
    if not settings.embedded_broker:
        where = redact_url(settings.broker_url_value())
        children = [api_child, Child("worker", worker_argv)]
        console.print(f"asyncml up: API on {_api_url(settings)}, broker {where}", highlight=False)
        raise typer.Exit(Supervisor(children, env=os.environ).run())

    from asyncml.engine.embedded import exclusive, recover_unacked
    from asyncml.store import open_store

    def recover() -> None:
        # Before every worker start: a worker that died left its messages invisible.
        store = open_store(settings)
        try:
            recover_unacked(settings, store)
        finally:
            store.close()

    children = [api_child, Child("worker", worker_argv, before_start=recover)]
    try:
        with exclusive(settings.data_dir):
            console.print(
                f"asyncml up: API on {_api_url(settings)}, embedded engine in "
                f"{settings.data_dir.resolve()}; Ctrl-C to stop",
                highlight=False,
            )
            code = Supervisor(children, env=os.environ).run()
    except RuntimeError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    raise typer.Exit(code)


def _api_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


@app.command()
def status(
    task_id: str,
    url: UrlOpt = "http://127.0.0.1:8000",
    wait: Annotated[float, typer.Option(help="Long-poll up to this many seconds.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Show a task's state and result."""
    from asyncml.client import Client

    try:
        with Client(url) as client:
            task = client.get(task_id, wait_s=wait)
    except AsyncmlError as exc:
        raise _fail(exc) from exc
    _print(task, as_json)
    if task["status"] == "FAILURE":
        raise typer.Exit(EXIT_FAILED)


@app.command()
def kinds(url: UrlOpt = "http://127.0.0.1:8000", as_json: JsonOpt = False) -> None:
    """List the declared task kinds and their inputs (from this installation)."""
    rows: list[dict[str, Any]] = [
        {
            "name": k.name,
            "queue": k.queue,
            "inputs": list(k.input_model.model_fields),
            "description": k.description,
        }
        for k in default_registry()
    ]
    if as_json:
        _print(rows, True)
        return
    from rich.table import Table

    table = Table("kind", "queue", "inputs", "description")
    for row in rows:
        table.add_row(row["name"], row["queue"], ", ".join(row["inputs"]), row["description"])
    console.print(table)


def _submit_command(kind: TaskKind[Any, Any]) -> None:
    fields = kind.input_model.model_fields

    def command(**options: Any) -> None:
        from asyncml.client import Client

        url, wait, timeout, as_json = (
            options.pop("url"),
            options.pop("wait"),
            options.pop("timeout"),
            options.pop("as_json"),
        )
        inputs = {name: options[name.replace("-", "_")] for name in fields}
        try:
            with Client(url) as client:
                task = client.submit(kind.name, inputs)
                if wait:
                    task = client.wait(task["id"], timeout_s=timeout)
        except AsyncmlError as exc:
            raise _fail(exc) from exc
        _print(task, as_json)
        if task["status"] == "FAILURE":
            raise typer.Exit(EXIT_FAILED)

    params = []
    for name, info in fields.items():
        annotation = bool if info.annotation is bool else str
        default = info.default if not info.is_required() else ...
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[
                    annotation,
                    typer.Option(f"--{name.replace('_', '-')}", help=info.description),
                ],
                default=default,
            )
        )
    params += [
        inspect.Parameter(
            "url",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=UrlOpt,
            default="http://127.0.0.1:8000",
        ),
        inspect.Parameter(
            "wait",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[bool, typer.Option("--wait", help="Wait for the result.")],
            default=False,
        ),
        inspect.Parameter(
            "timeout",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[float, typer.Option(help="Seconds --wait waits at most.")],
            default=300.0,
        ),
        inspect.Parameter(
            "as_json", inspect.Parameter.KEYWORD_ONLY, annotation=JsonOpt, default=False
        ),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # for typer
    command.__doc__ = kind.description or f"Submit a {kind.name} task."
    submit_app.command(kind.name)(command)


for _kind in default_registry():
    _submit_command(_kind)


def main() -> None:
    app()
