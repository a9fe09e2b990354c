"""What every command shares: the app, consoles, options, exit codes, output."""

from __future__ import annotations

import json
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
from asyncml.registry import Registry, build_registry
from asyncml.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

app = typer.Typer(
    name="asyncml",
    help="Asynchronous inference service: API, workers and a client.\n\n"
    "Exit codes: 0 ok, 1 a task failed, 2 the request was wrong, 3 service unavailable.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOpt = Annotated[str, typer.Option("--url", envvar="ASYNCML_URL", help="Base URL of the API.")]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="ASYNCML_API_KEY", help="API key, when the server wants one."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the bad variable
        err_console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc


def load_registry() -> Registry:
    """The registry of the settings (models and debug kinds included), as the API and the
    workers build it: every command sees the kinds the service serves."""
    return build_registry(load_settings())


def exit_for(exc: AsyncmlError) -> int:
    if isinstance(exc, ServiceUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, InputInvalid | UnknownKind | TaskNotFound):
        return EXIT_USAGE
    return EXIT_FAILED


def fail(exc: AsyncmlError, as_json: bool = False) -> typer.Exit:
    """Report an error (as JSON on stdout with --json, else on stderr); the exit to raise."""
    if as_json:
        sys.stdout.write(json.dumps(exc.to_body()) + "\n")
    else:
        err_console.print(f"[red]{exc.type}:[/red] {exc.message}", highlight=False)
    return typer.Exit(exit_for(exc))


def emit(data: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        console.print_json(data=data)
