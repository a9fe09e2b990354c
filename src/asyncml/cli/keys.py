"""``asyncml keys``: create, list and revoke API keys in the task store the API reads.

Run where the settings point at the deployment's store (Redis, or the embedded data
folder). A key is printed once, at creation; the store keeps only its SHA-256 digest.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from asyncml.auth import key_file_line, make_key
from asyncml.cli._common import EXIT_USAGE, JsonOpt, app, console, emit, err_console, load_settings
from asyncml.store import open_store

keys_app = typer.Typer(help="API keys: create, list, revoke (stored as digests only).")
app.add_typer(keys_app, name="keys")

RateOpt = Annotated[
    str | None,
    typer.Option("--rate", help="This key's request rate, e.g. 10/second [ASYNCML_RATE_LIMIT]."),
]
MaxUnfinishedOpt = Annotated[
    int | None,
    typer.Option(
        "--max-unfinished",
        min=0,
        help="Cap on its unfinished tasks [ASYNCML_MAX_UNFINISHED_PER_KEY].",
    ),
]


def _checked_rate(rate: str | None) -> str | None:
    if rate is None:
        return None
    from limits import parse_many

    try:
        parse_many(rate)
    except ValueError:
        err_console.print(f"[red]--rate:[/red] {rate!r} is not a rate like 10/second or 600/minute")
        raise typer.Exit(EXIT_USAGE) from None
    return rate


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the key (unique).")],
    rate: RateOpt = None,
    max_unfinished: MaxUnfinishedOpt = None,
    operator: Annotated[
        bool,
        typer.Option(
            "--operator",
            help="The key may see every task, the workers and the dead letters in the "
            "dashboard (/ui).",
        ),
    ] = False,
    file_line: Annotated[
        bool,
        typer.Option(
            "--file-line",
            help="Store nothing: print the key and its line for ASYNCML_API_KEYS_FILE.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a key; it is shown once, keep it."""
    try:
        key, record = make_key(
            name, rate=_checked_rate(rate), max_unfinished=max_unfinished, operator=operator
        )
    except ValueError as exc:
        err_console.print(f"[red]name:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    if not file_line:
        store = open_store(load_settings())
        try:
            if not store.key_add(record):
                err_console.print(f"[red]a key named {name!r} exists;[/red] revoke it first")
                raise typer.Exit(EXIT_USAGE)
        finally:
            store.close()
    line = key_file_line(record)
    if as_json:
        emit({"name": name, "key": key, "digest": record.digest, "file_line": line}, True)
    else:
        sys.stdout.write(key + "\n")
        hint = f"keys-file line: {line}" if file_line else "stored; shown once, keep it"
        err_console.print(f"[green]{name}[/green]: {hint}", highlight=False, soft_wrap=True)
    _warn_if_not_enforced()


def _warn_if_not_enforced() -> None:
    """A key made for a server that asks for none looks like protection that is not there."""
    settings = load_settings()
    if settings.auth_required:
        return
    why = (
        "ASYNCML_AUTH=off"
        if settings.auth == "off"
        else f"ASYNCML_AUTH=auto and the API listens on loopback ({settings.api_host})"
    )
    err_console.print(
        f"[yellow]note:[/yellow] keys are not enforced with these settings ({why}): "
        "requests without a key are served; set ASYNCML_AUTH=on to require keys",
        highlight=False,
        soft_wrap=True,
    )


@keys_app.command("list")
def list_keys(as_json: JsonOpt = False) -> None:
    """The keys in the store (names and limits; never the keys)."""
    store = open_store(load_settings())
    try:
        keys = store.key_list()
    finally:
        store.close()
    if as_json:
        emit([k.model_dump(mode="json") | {"key_id": k.key_id} for k in keys], True)
        return
    table = Table("name", "key id", "created", "rate", "max unfinished", "operator")
    for k in keys:
        table.add_row(
            k.name,
            k.key_id,
            k.created_at.isoformat(timespec="seconds"),
            k.rate or "default",
            "default" if k.max_unfinished is None else str(k.max_unfinished),
            "yes" if k.operator else "",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Delete a key; every API process refuses it within a second."""
    store = open_store(load_settings())
    try:
        if not store.key_revoke(name):
            err_console.print(f"[red]no key named {name!r}[/red] (keys from the keys file stay)")
            raise typer.Exit(EXIT_USAGE)
    finally:
        store.close()
    err_console.print(f"revoked {name}")
