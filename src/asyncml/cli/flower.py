"""``asyncml flower``: Flower, the Celery monitor, on the service's own Celery app.

Flower is imported only when this command runs: it loads prometheus-client, which a worker
must import only after it has chosen its metrics folder.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer
from rich.markup import escape

from asyncml.cli._common import EXIT_USAGE, app, console, err_console, load_settings
from asyncml.engine.config import broker_url
from asyncml.extras import extra_hint, has_extra_module
from asyncml.registry import build_registry
from asyncml.settings import Settings, redact_url


class FlowerRefused(ValueError):
    """Flower would be useless or unsafe with these settings and options."""


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def flower_argv(
    settings: Settings,
    *,
    address: str,
    port: int,
    broker_api: str | None = None,
    basic_auth: str | None = None,
    allow_no_auth: bool = False,
) -> list[str]:
    """The ``celery flower`` arguments, or FlowerRefused saying why Flower must not start.

    The embedded broker has no broadcast and workers send no events on it, so Flower would
    show nothing. Flower can revoke tasks and shut workers down: without basic auth it may
    listen on loopback only, unless an authenticating proxy is vouched for.
    """
    if settings.embedded_broker:
        raise FlowerRefused(
            "Flower needs RabbitMQ: the embedded SQLite broker has no broadcast and its "
            "workers send no events, so Flower would see nothing. "
            "Set ASYNCML_BROKER_URL=amqp://user:pass@host:5672//"
        )
    if not basic_auth and not allow_no_auth and not _is_loopback(address):
        raise FlowerRefused(
            f"Flower on {address} without basic auth would let anyone revoke tasks and stop "
            "workers: set FLOWER_BASIC_AUTH=user:password (or --basic-auth), listen on "
            "127.0.0.1, or pass --allow-no-auth behind an authenticating proxy"
        )
    if basic_auth and any(":" not in pair for pair in basic_auth.split(",")):
        raise FlowerRefused("basic auth must be user:password (several: comma-separated)")
    argv = [
        "flower",
        f"--address={address}",
        f"--port={port}",
        f"--logging={settings.log_level.lower()}",
    ]
    if broker_api:
        argv.append(f"--broker_api={broker_api}")
    if basic_auth:
        argv.append(f"--basic_auth={basic_auth}")
    return argv


@app.command()
def flower(
    address: Annotated[
        str, typer.Option(help="Listen address; 0.0.0.0 in a container (needs basic auth).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Listen port.")] = 5555,
    broker_api: Annotated[
        str | None,
        typer.Option(
            envvar="FLOWER_BROKER_API",
            help="RabbitMQ management API, e.g. http://user:pass@rabbitmq:15672/api/, "
            "for queue lengths in Flower's Broker tab.",
            show_default=False,
        ),
    ] = None,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            envvar="FLOWER_BASIC_AUTH",
            help="user:password[,user2:password2]; prefer the variable: options show in ps.",
            show_default=False,
        ),
    ] = None,
    allow_no_auth: Annotated[
        bool,
        typer.Option(help="Serve without basic auth on a non-loopback address (behind a proxy)."),
    ] = False,
) -> None:
    """Run Flower, the Celery monitor, on the configured RabbitMQ broker."""
    from asyncml.engine import make_celery
    from asyncml.logging import configure_logging

    if not has_extra_module("flower"):
        hint = escape(extra_hint("flower", "Flower"))  # "[flower]" is not rich markup
        err_console.print(f"[red]asyncml flower:[/red] {hint}", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings()
    try:
        argv = flower_argv(
            settings,
            address=address,
            port=port,
            broker_api=broker_api,
            basic_auth=basic_auth,
            allow_no_auth=allow_no_auth,
        )
    except FlowerRefused as exc:
        err_console.print(f"[red]asyncml flower:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from exc
    configure_logging(settings, "flower")
    console.print(
        f"asyncml flower: http://{address}:{port}, broker {redact_url(broker_url(settings))}",
        highlight=False,
    )
    celery = make_celery(settings, build_registry(settings))
    # Workers send Celery's task events only when asked (ASYNCML_WORKER_TASK_EVENTS is off by
    # default: three publishes a task nobody reads without a monitor). Flower asks too, but
    # only 5 s after it starts; asking now lets it see the tasks of its first seconds.
    celery.control.enable_events()
    raise typer.Exit(celery.start(argv) or 0)
