"""What every command shares: the app, consoles, options, exit codes, output."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperOption

from asyncml.errors import (
    AsyncmlError,
    InputInvalid,
    ServiceUnavailable,
    TaskConflict,
    TaskNotFound,
    UnknownKind,
)
from asyncml.registry import Registry, build_registry
from asyncml.settings import Settings

# 4: the request was right but the task's state refuses it (cancelling a finished task);
# 1 would read as "a task failed", which it did not.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_CONFLICT = 0, 1, 2, 3, 4


def _flags_show_no_type() -> None:
    """typer 0.29 labels every flag ``<bool>`` in help (``--help <bool>``), which reads as if
    the flag took a value; typer has no setting for it, so a flag's type column is left empty.
    Only where typer has the method: an older or newer typer keeps its own behaviour."""
    display = getattr(TyperOption, "display_type_rich", None)
    if display is None or getattr(display, "_asyncml_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:  # Any: typer's own click
        if self.is_flag and not self.metavar:
            return None
        result: str | None = display(self, ctx)
        return result

    display_type_rich._asyncml_flags = True  # type: ignore[attr-defined]  # a marker, once
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]  # above


_flags_show_no_type()

app = typer.Typer(
    name="asyncml",
    help="Asynchronous inference service: API, workers and a client.\n\n"
    "Exit codes: 0 ok, 1 a task failed, 2 the request was wrong, 3 service unavailable, "
    "4 the task's state refuses it (e.g. cancelling a finished task).",
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
    if isinstance(exc, TaskConflict):
        return EXIT_CONFLICT
    return EXIT_FAILED


def fail(exc: AsyncmlError, as_json: bool = False) -> typer.Exit:
    """Report an error (as JSON on stdout with --json, else on stderr); the exit to raise."""
    if as_json:
        sys.stdout.write(json.dumps(exc.to_body()) + "\n")
    else:
        # escaped: a message may hold brackets ("the [decode] extra") that rich would eat
        err_console.print(f"[red]{exc.type}:[/red] {escape(exc.message)}", highlight=False)
    return typer.Exit(exit_for(exc))


def schema_type(prop: dict[str, Any]) -> str:
    """A JSON-schema property's type in a few characters: ``number``, ``string (date)``,
    ``list[ModelIrisRow]``. Optional fields are ``anyOf [T, null]``, whose top level has no
    ``type``: read alone, a model's every feature showed no type at all."""
    options = prop.get("anyOf") or prop.get("oneOf")
    if options:
        named = (schema_type(option) for option in options if option.get("type") != "null")
        return " | ".join(dict.fromkeys(named)) or "null"
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    kind = str(prop.get("type", ""))
    if kind == "array" and isinstance(prop.get("items"), dict):
        return f"list[{schema_type(prop['items'])}]"
    fmt = prop.get("format")
    if fmt and kind:
        return f"{kind} ({fmt})"
    return kind or str(fmt or "any")


def emit(data: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        console.print_json(data=data)
