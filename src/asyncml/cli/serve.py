"""The service's roles: ``asyncml api``, ``asyncml worker``, ``asyncml up``."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from asyncml.cli._common import EXIT_USAGE, app, console, err_console, load_settings
from asyncml.errors import InputInvalid
from asyncml.registry import build_registry
from asyncml.settings import Settings, redact_url

if TYPE_CHECKING:
    from fastapi import FastAPI


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Listen address [ASYNCML_API_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [ASYNCML_API_PORT].")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="API processes [ASYNCML_API_PROCESSES]; default: two on the embedded engine.",
        ),
    ] = None,
) -> None:
    """Run the HTTP API."""
    settings = load_settings()
    processes = workers or settings.api_process_count
    if processes > 1:
        # Before prometheus-client loads: the processes' series add up in one folder.
        _prepare_multiprocess_metrics()
    import uvicorn

    from asyncml.api.server import uvicorn_options

    if host is not None:  # where it listens decides whether keys are required (auth=auto)
        settings = settings.model_copy(update={"api_host": host})
        os.environ["ASYNCML_API_HOST"] = host  # for the processes --workers spawns
    options: dict[str, Any] = {
        **uvicorn_options(settings),
        "host": settings.api_host,
        "port": port if port is not None else settings.api_port,
    }
    if processes > 1:
        from uvicorn.config import STARTUP_FAILURE
        from uvicorn.supervisors import Multiprocess

        from asyncml.logging import configure_logging

        configure_logging(settings, "api")
        # uvicorn.run(workers=N), driven here so that a process that could not start makes
        # this command fail (exit 3) as the single-process server does, not exit 0.
        config = uvicorn.Config(
            f"{__name__}:api_process", factory=True, workers=processes, **options
        )
        processes_of = Multiprocess(config, sockets=[config.bind_socket()])
        processes_of.run()
        if any(p.exitcode == STARTUP_FAILURE for p in processes_of.processes):
            raise typer.Exit(STARTUP_FAILURE)
    else:
        uvicorn.run(_api_app(settings), **options)


def api_process() -> FastAPI:
    """Factory of each process ``asyncml api --workers`` spawns: a new interpreter, so it
    builds its settings, logging and metrics as ``asyncml api`` does (the server's limits
    come with the protocol factory, see ``api/server.py``). It dies with the process that
    spawned it (uvicorn's parent would leave it serving the port), and one that cannot
    build its app exits as a start-up failure, which stops the others instead of being
    spawned again every half second."""
    from uvicorn.config import STARTUP_FAILURE

    from asyncml.supervisor import die_with_parent

    die_with_parent()
    try:
        return _api_app(load_settings())
    except Exception:
        logging.getLogger(__name__).exception("the API process could not start")
        sys.exit(STARTUP_FAILURE)


def _api_app(settings: Settings) -> FastAPI:
    from asyncml import metrics
    from asyncml.api.app import create_app
    from asyncml.logging import configure_logging

    configure_logging(settings, "api")
    folder = os.environ.get(_MULTIPROC_ENV)  # set by asyncml up for all its processes
    metrics.share_between_processes(Path(folder) if folder else None)
    return create_app(settings)


@app.command()
def worker(
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues; default: every queue.")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Worker processes [ASYNCML_WORKER_CONCURRENCY]; with --pool threads, "
            "threads [ASYNCML_MODELS_WORKER_THREADS]."
        ),
    ] = None,
    pool: Annotated[
        str,
        typer.Option(
            help="prefork (one process per task: CPU-bound work, hard time limits), threads "
            "(many tasks in one process: model queues, for dynamic batching), or auto: "
            "threads when every queue is a model queue."
        ),
    ] = "auto",
) -> None:
    """Run a Celery worker for some or all queues."""
    folder = _prepare_multiprocess_metrics()
    # Imported only now: they load prometheus-client, which must see the folder first.
    from asyncml.engine.worker import plan_worker, run_worker
    from asyncml.logging import configure_logging

    settings = load_settings()
    configure_logging(settings, "worker")
    registry = build_registry(settings)
    chosen = [q.strip() for q in queues.split(",")] if queues else None
    try:
        plan = plan_worker(settings, registry, queues=chosen, concurrency=concurrency, pool=pool)
    except InputInvalid as exc:
        err_console.print(exc.message, highlight=False)
        raise typer.Exit(EXIT_USAGE) from exc
    run_worker(settings, registry, plan, metrics_folder=folder)


_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # not imported from metrics: that would load it


def _prepare_multiprocess_metrics() -> Path:
    """Prefork children share one metrics folder; it must exist, empty, before
    prometheus-client is imported (it picks its storage at import)."""
    import shutil
    import sys
    import tempfile

    if "prometheus_client" in sys.modules and _MULTIPROC_ENV not in os.environ:
        raise RuntimeError("prometheus_client was imported before the worker set its folder")
    folder = os.environ.get(_MULTIPROC_ENV)
    if folder is None:
        folder = os.environ[_MULTIPROC_ENV] = tempfile.mkdtemp(prefix="asyncml-metrics-")
    elif not os.environ.get("ASYNCML_SUPERVISED"):
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


@app.command()
def up(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes [ASYNCML_WORKER_CONCURRENCY].")
    ] = None,
) -> None:
    """Run the API and a worker for every queue, supervised; Ctrl-C stops all of it."""
    from asyncml.engine.config import all_queues, broker_url
    from asyncml.logging import configure_logging
    from asyncml.models import model_queues
    from asyncml.supervisor import Child, Supervisor, python_argv

    settings = load_settings()
    configure_logging(settings, "up")
    registry = build_registry(settings)
    # Model queues get a worker of their own (a pool of threads that batches); the rest
    # share one prefork worker.
    for_models = sorted(model_queues(registry))
    groups = [q for q in [sorted(set(all_queues(registry)) - set(for_models)), for_models] if q]
    names = ["worker", "worker-models"] if len(groups) == 2 else ["worker"]
    workers: list[tuple[str, list[str], list[str]]] = []
    for name, queues in zip(names, groups, strict=True):
        argv = python_argv("worker", "--queues", ",".join(queues))
        if concurrency and queues is not for_models:
            argv += ["--concurrency", str(concurrency)]
        workers.append((name, argv, queues))
    api_child = Child("api", python_argv("api"))
    if not settings.embedded_broker:
        where = redact_url(broker_url(settings))
        children = [api_child, *(Child(name, argv) for name, argv, _ in workers)]
        console.print(f"asyncml up: API on {_api_url(settings)}, broker {where}", highlight=False)
        raise typer.Exit(Supervisor(children, env=_children_env(settings)).run())

    from asyncml.engine.embedded_upkeep import exclusive, recover_unacked, sweeping
    from asyncml.store import open_store

    def recovery(queues: list[str]) -> Callable[[], None]:
        def recover() -> None:
            # Before every start of a worker: one that died left its messages invisible.
            store = open_store(settings)
            try:
                recover_unacked(settings, store, queues)
            finally:
                store.close()

        return recover

    children = [
        api_child,
        *(Child(name, argv, before_start=recovery(queues)) for name, argv, queues in workers),
    ]
    try:
        with exclusive(settings.data_dir), sweeping(settings):
            console.print(
                f"asyncml up: API on {_api_url(settings)}, embedded engine in "
                f"{settings.data_dir.resolve()}; Ctrl-C to stop",
                highlight=False,
            )
            code = Supervisor(children, env=_children_env(settings)).run()
    except RuntimeError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    raise typer.Exit(code)


def _children_env(settings: Settings) -> dict[str, str]:
    """One metrics folder for the API and the worker, so the API's /metrics shows both."""
    import shutil

    folder = (settings.data_dir / "metrics").resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return {
        **os.environ,
        _MULTIPROC_ENV: str(folder),
        "ASYNCML_SUPERVISED": "1",
        "ASYNCML_WORKER_METRICS_PORT": "0",
    }


def _api_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


@app.command("webhook-secret")
def webhook_secret() -> None:
    """Print a new Standard Webhooks secret for ASYNCML_WEBHOOK_SECRET."""
    from asyncml.webhooks import new_secret

    console.print(new_secret(), highlight=False)
