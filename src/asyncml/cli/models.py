"""``asyncml models check|list|example`` and ``asyncml predict``: the model folder from a shell.

``check`` and ``list`` read the folders this machine's settings point at (as the API and
workers started here would); ``predict`` is a client command, like ``submit``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from asyncml.cli._common import (
    DEFAULT_URL,
    EXIT_FAILED,
    EXIT_USAGE,
    ApiKeyOpt,
    JsonOpt,
    UrlOpt,
    app,
    console,
    emit,
    err_console,
    fail,
    load_settings,
)
from asyncml.errors import AsyncmlError, InputInvalid

models_app = typer.Typer(help="The models served as model.<name> kinds.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("check")
def check(as_json: JsonOpt = False) -> None:
    """Check every model folder; print each one's problem; exit 1 if any cannot be served."""
    from asyncml.models import discover

    settings = load_settings()
    found = discover(settings)
    if as_json:
        emit(
            {
                "ok": [
                    {"folder": str(s.folder), "kind": s.manifest.kind_name} for s in found.specs
                ],
                "problems": [
                    {"folder": str(p.folder), "message": p.message} for p in found.problems
                ],
            },
            True,
        )
    else:
        for spec in found.specs:
            console.print(
                f"[green]ok[/green]    {spec.folder}: {spec.manifest.kind_name} "
                f"{spec.manifest.version}",
                highlight=False,
            )
        for problem in found.problems:
            console.print(f"[red]FAIL[/red]  {problem.folder}: {problem.message}", highlight=False)
        if not found.specs and not found.problems:
            console.print(f"no model folders in {settings.models_path()}", highlight=False)
    if found.problems:
        raise typer.Exit(EXIT_FAILED)


def _feature_text(feature: Any) -> str:
    if feature.enum is not None:
        return f"{feature.name}: {'|'.join(feature.enum)}"
    bounds = ""
    if feature.min is not None or feature.max is not None:
        low = "" if feature.min is None else f"{feature.min:g}"
        high = "" if feature.max is None else f"{feature.max:g}"
        bounds = f" [{low}..{high}]"
    return f"{feature.name}: {feature.type}{bounds}"


def _split_text(split: dict[str, float]) -> str:
    return ", ".join(f"{v}: {share:.0%}" for v, share in split.items())


@models_app.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """The models that load: name, versions (default *), traffic split, format, features."""
    from asyncml.models import discover

    found = discover(load_settings())
    if as_json:
        emit(
            [
                {
                    "name": m.name,
                    "kind": s.manifest.kind_name,
                    "version": s.manifest.version,
                    "versions": list(m.versions),
                    "default_version": m.default,
                    "traffic": m.split(),
                    "layout": m.layout,
                    "format": s.manifest.format,
                    "queue": s.manifest.queue,
                    "features": [f.model_dump(exclude_none=True) for f in s.manifest.features],
                    "folder": str(m.folder),
                }
                for m in found.models
                if (s := m.default_spec) is not None
            ],
            True,
        )
        return
    table = Table("name", "versions", "traffic", "format", "queue", "features")
    for model in found.models:
        spec = model.default_spec
        if spec is None:
            continue
        m = spec.manifest
        versions = ", ".join(f"{v}*" if v == model.default else v for v in model.versions)
        table.add_row(
            m.name,
            versions,
            _split_text(model.split()),
            m.format,
            m.queue,
            ", ".join(map(_feature_text, m.features)),
        )
    console.print(table)
    if found.problems:
        err_console.print(
            f"{len(found.problems)} folder(s) skipped; `asyncml models check` says why",
            highlight=False,
        )


@models_app.command("reload")
def reload() -> None:
    """Make every running API and worker read the model folders now (added or removed
    versions, a new split), without waiting for the folder to settle."""
    from asyncml.models import RELOAD_STAMP, discover

    settings = load_settings()
    folder = settings.models_path()
    if not folder.is_dir():
        err_console.print(f"{folder} is not a folder", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    (folder / RELOAD_STAMP).touch()
    found = discover(settings)
    for model in found.models:
        console.print(
            f"{model.name}: versions {', '.join(model.versions)}, default {model.default}, "
            f"traffic {_split_text(model.split())}",
            highlight=False,
        )
    for problem in found.problems:
        console.print(f"[red]FAIL[/red]  {problem.folder}: {problem.message}", highlight=False)
    console.print("running processes read the folders within a second", highlight=False)


@models_app.command("example")
def example(
    out: Annotated[Path, typer.Option("--out", help="Folder to write iris/ into.")],
) -> None:
    """Retrain the bundled iris example and export it to ONNX (needs the dev dependencies)."""
    from asyncml.models.errors import ModelError
    from asyncml.models.export import export_iris

    try:
        folder = export_iris(out)
    except ModelError as exc:
        raise fail(exc) from exc
    console.print(f"wrote {folder / 'model.toml'} and {folder / 'model.onnx'}", highlight=False)


def _parse_input(text: str) -> dict[str, Any]:
    """JSON text, or @file holding it; one row as an object, or a list of rows."""
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputInvalid(f"--input is not JSON: {exc}") from exc
    if isinstance(data, list):
        return {"instances": data}
    if not isinstance(data, dict):
        raise InputInvalid("--input must be a JSON object (one row) or a list of rows")
    return data


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Model name (the kind is model.<name>).")],
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            help='One row {"feature": value, ...}, a list of rows, or @file holding either.',
        ),
    ],
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result.")] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up waiting after this many seconds.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit rows to model.<name>, e.g. --input '{"sepal_length": 5.1, ...}'."""
    from asyncml.cli.tasks import CLI_RETRIES, show
    from asyncml.client import Client

    kind = model if model.startswith("model.") else f"model.{model}"
    try:
        inputs = _parse_input(input_)
    except OSError as exc:
        err_console.print(f"--input: {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from exc
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    try:
        with Client(url, api_key=api_key, retries=CLI_RETRIES) as client:
            task = client.submit(kind, **inputs)
            if wait:
                task = client.wait(task.id, timeout=timeout)
    except AsyncmlError as exc:
        raise fail(exc, as_json) from exc
    show(task, as_json)
