"""The dashboard's pages. Everything shown comes from the task store (records, events,
history indexes, heartbeats, dead letters), never from this process's memory, so a
restart loses nothing and every API process shows the same.

Access is the API's: a key sees its own tasks (another's is the 404 page), an operator
key (or anyone with keys off) sees every task, the workers and the dead letters. Submits
go through ``Submitter.submit``, cancels through ``Submitter.cancel``, dead-letter
retries through ``cli.dlq.replay``: the same paths as the API and the CLI.

Over 350 lines for now: one router whose pages share the viewer, form and template
helpers; the next split is one module per page group (tasks, dead letters, kinds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from asyncml._version import __version__
from asyncml.api.deps import Services
from asyncml.api.events import KEEPALIVE_S, task_events, with_standing
from asyncml.api.schema import strict
from asyncml.auth import KEY_PREFIX, Caller, digest
from asyncml.errors import (
    AsyncmlError,
    TaskConflict,
    TaskNotFound,
    Unauthorized,
)
from asyncml.records import TaskEvent, TaskRecord, TaskStatus, utcnow
from asyncml.registry import Registry
from asyncml.settings import Settings
from asyncml.store import open_store
from asyncml.store.history import INPUT_KEPT_CHARS
from asyncml.ui import forms, stats
from asyncml.ui.headers import SecurityHeaders
from asyncml.ui.session import (
    CsrfRefused,
    LoginRequired,
    OperatorOnly,
    Sessions,
    Viewer,
    clear_cookie,
    set_cookie,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGE = 50
TRY_WAIT_S = 30.0  # the try-it form's Prefer: wait
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


def pretty(value: Any) -> str:
    """JSON for people; Jinja escapes it where it is shown."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _input_text(raw: str | None) -> tuple[str | None, bool]:
    """The kept input, pretty if whole; and whether it was cut."""
    if raw is None:
        return None, False
    try:
        return pretty(json.loads(raw)), False
    except json.JSONDecodeError:
        return raw, len(raw) >= INPUT_KEPT_CHARS


def _when(value: datetime | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float | int):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    return f"{(end - start).total_seconds():.3f} s"


def _event_text(event: TaskEvent) -> str:
    data = event.data
    if event.type == "started":
        return f"attempt {data.get('attempt')} on {data.get('worker') or 'a worker'}"
    if event.type == "progress":
        total = data.get("total")
        done = f"{data.get('done')}" + (f"/{total}" if total else "")
        return f"{done} {data.get('message') or ''}".strip()
    if event.type == "log":
        return f"{data.get('level', 'info')}: {data.get('message', '')}"
    if event.type == "output":
        return json.dumps(data.get("partial"), ensure_ascii=False, default=str)
    return ""


def create_ui(settings: Settings, registry: Registry, parent: FastAPI) -> FastAPI:
    """The dashboard app, mounted at ``/ui`` by ``create_app``; it reads the parent's
    services (built in the parent's lifespan)."""
    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    ui.add_middleware(SecurityHeaders)
    ui.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    env = templates.env
    env.filters["pretty"] = pretty
    env.filters["when"] = _when
    env.globals["version"] = __version__
    sessions = Sessions(settings)

    def services() -> Services:
        found: Services = parent.state.services
        return found

    async def viewer(request: Request) -> Viewer:
        svc = services()
        return await sessions.viewer(request, svc.auth.by_digest, svc.auth.required)

    def page(
        request: Request,
        who: Viewer,
        template: str,
        context: dict[str, Any],
        status_code: int = 200,
    ) -> HTMLResponse:
        response = templates.TemplateResponse(
            request,
            template,
            {"viewer": who, "keys_on": services().auth.required, **context},
            status_code=status_code,
        )
        response.headers["Cache-Control"] = "no-store"
        if who.new_cookie is not None:
            set_cookie(request, response, who.new_cookie)
        return response

    async def form_of(request: Request, who: Viewer) -> dict[str, str]:
        values = await _form(request)
        who.check_csrf(values.get("csrf"))
        return values

    async def visible_task(task_id: str, caller: Caller) -> TaskRecord:
        """The API's rule: another key's task is a 404; an operator sees every task."""
        record = await services().store.get(task_id)
        if record is None or (record.owner != caller.owner and not caller.operator):
            raise TaskNotFound(f"no task with id {task_id!r}")
        return record

    def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
        who = Viewer(Caller(key=None), "")  # an error page shows no controls
        return page(
            request,
            who,
            "error.html",
            {"title": title, "message": message, "bare": True},
            status_code=status,
        )

    @ui.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("hx-request"):  # a fragment: ask htmx to load the login page
            return Response(status_code=204, headers={"HX-Redirect": "/ui/login"})
        return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)

    @ui.exception_handler(OperatorOnly)
    async def _operator(request: Request, exc: OperatorOnly) -> Response:
        return error_page(request, 403, "Operators only", str(exc))

    @ui.exception_handler(CsrfRefused)
    async def _csrf(request: Request, exc: CsrfRefused) -> Response:
        return error_page(request, 403, "Form refused", str(exc))

    @ui.exception_handler(AsyncmlError)
    async def _error(request: Request, exc: AsyncmlError) -> Response:
        title = "Not found" if exc.status_code == 404 else "Error"
        return error_page(request, exc.status_code, title, exc.message)

    @ui.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = "Not found" if exc.status_code == 404 else "Error"
        message = "No such page." if exc.status_code == 404 else str(exc.detail)
        return error_page(request, exc.status_code, title, message)

    # --- signing in and out --------------------------------------------------------

    @ui.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/ui/") -> Response:
        data = await sessions.read(request)
        if data is None:
            cookie, csrf = await sessions.make("")
            who = Viewer(Caller(key=None), csrf, new_cookie=cookie)
        else:
            who = Viewer(Caller(key=None), data["c"])
        return page(request, who, "login.html", {"next": _local(next), "bare": True})

    @ui.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        data = await sessions.read(request)
        values = await _form(request)
        who = Viewer(Caller(key=None), "" if data is None else data["c"])
        who.check_csrf(values.get("csrf"))
        key = values.get("key", "").strip()
        target = _local(values.get("next", "/ui/"))
        try:
            caller = await services().auth.authenticate(f"Bearer {key}")
        except Unauthorized:
            who.new_cookie = None
            return page(
                request,
                who,
                "login.html",
                {"next": target, "bare": True, "failed": True},
                status_code=401,
            )
        cookie, _ = await sessions.make(digest(key) if key.startswith(KEY_PREFIX) else "")
        response = RedirectResponse(target, status_code=303)
        set_cookie(request, response, cookie)
        log.info("dashboard: %s signed in", caller.name)
        return response

    @ui.post("/logout")
    async def logout(request: Request) -> Response:
        who = await viewer(request)
        await form_of(request, who)
        response = RedirectResponse("/ui/login", status_code=303)
        clear_cookie(request, response)
        return response

    # --- overview ------------------------------------------------------------------

    @ui.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        who = await viewer(request)
        if not who.operator:
            return RedirectResponse("/ui/tasks", status_code=303)
        svc = services()
        now = time.time()
        queues = registry.queues
        depths = await svc.store.queue_depths(queues)
        finished = await svc.store.finished_since(utcnow() - timedelta(minutes=stats.MINUTES))
        workers = await svc.store.workers()
        figures = stats.overview(finished, now)
        return page(
            request,
            who,
            "overview.html",
            {
                "depths": depths,
                "figures": figures,
                "chart": figures.chart_data(),
                "workers": workers,
                "now": now,
            },
        )

    # --- tasks ---------------------------------------------------------------------

    async def task_page(
        who: Viewer,
        status: str | None,
        kind: str | None,
        since: str | None,
        cursor: str | None,
    ) -> tuple[list[TaskRecord], str | None]:
        svc = services()
        state = TaskStatus(status) if status and status in TaskStatus.__members__ else None
        kind = kind if kind in registry else None
        start = utcnow() - SINCE[since] if since in SINCE else None
        if who.operator:
            found = await svc.store.list_all(
                status=state, kind=kind, since=start, limit=PAGE, cursor=cursor
            )
            return found.tasks, found.next_cursor
        found = await svc.store.list_tasks(
            who.caller.owner, status=state, kind=kind, limit=PAGE, cursor=cursor
        )
        if start is None:
            return found.tasks, found.next_cursor
        kept = [task for task in found.tasks if task.submitted_at >= start]
        return kept, found.next_cursor if len(kept) == len(found.tasks) else None

    def _filters(status: str | None, kind: str | None, since: str | None) -> dict[str, str]:
        return {k: v for k, v in (("status", status), ("kind", kind), ("since", since)) if v}

    @ui.get("/tasks", response_class=HTMLResponse)
    async def tasks(
        request: Request,
        status: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        cursor: str | None = None,
        id: str | None = None,
    ) -> Response:
        who = await viewer(request)
        if id:
            return RedirectResponse(f"/ui/tasks/{id.strip()}", status_code=303)
        rows, next_cursor = await task_page(who, status, kind, since, cursor)
        filters = _filters(status, kind, since)
        return page(
            request,
            who,
            "tasks.html",
            {
                "rows": rows,
                "filters": filters,
                "query": urlencode(filters),
                "next_query": urlencode({**filters, "cursor": next_cursor}) if next_cursor else "",
                "live": cursor is None,
                "kinds": [k.name for k in registry],
                "statuses": [s.value for s in TaskStatus],
                "since_choices": list(SINCE),
            },
        )

    @ui.get("/tasks/rows", response_class=HTMLResponse)
    async def task_rows(
        request: Request,
        status: str | None = None,
        kind: str | None = None,
        since: str | None = None,
    ) -> Response:
        """The first page's rows again: htmx swaps them in every few seconds."""
        who = await viewer(request)
        rows, _ = await task_page(who, status, kind, since, None)
        filters = _filters(status, kind, since)
        return page(request, who, "_rows.html", {"rows": rows, "query": urlencode(filters)})

    @ui.get("/tasks/{task_id}", response_class=HTMLResponse)
    async def task(request: Request, task_id: str) -> Response:
        who = await viewer(request)
        record = await visible_task(task_id, who.caller)
        svc = services()
        if record.status is TaskStatus.QUEUED:
            record = with_standing(record, await svc.store.standing(record))
        events = await svc.store.events_after(record.id, None)
        input_text, input_cut = _input_text(await svc.store.task_input(record.id))
        progress = next((e for e in reversed(events) if e.type == "progress"), None)
        return page(
            request,
            who,
            "task.html",
            {
                "task": record,
                "events": [(e, _event_text(e)) for e in events],
                "last_event_id": events[-1].id if events else "",
                "attempts": sum(1 for e in events if e.type == "started"),
                "input_text": input_text,
                "input_cut": input_cut,
                "progress": progress,
                "ran": _duration(record.started_at, record.finished_at),
                "waited": _duration(record.submitted_at, record.started_at),
            },
        )

    @ui.get("/tasks/{task_id}/events")
    async def task_stream(request: Request, task_id: str, after: str | None = None) -> Response:
        """The API's event stream of the task, for the page (a browser's EventSource
        cannot send an Authorization header; the session cookie stands for it)."""
        who = await viewer(request)
        record = await visible_task(task_id, who.caller)
        resume = request.headers.get("last-event-id") or after or None
        return EventSourceResponse(
            task_events(services().store, record, resume),
            ping=KEEPALIVE_S,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @ui.post("/tasks/{task_id}/cancel")
    async def cancel(request: Request, task_id: str) -> Response:
        who = await viewer(request)
        await form_of(request, who)
        await visible_task(task_id, who.caller)
        with contextlib.suppress(TaskConflict):  # started meanwhile: its page says so
            await services().submitter.cancel(task_id)
        return RedirectResponse(f"/ui/tasks/{task_id}", status_code=303)

    # --- kinds and the try-it form ---------------------------------------------------

    @ui.get("/kinds", response_class=HTMLResponse)
    async def kinds(request: Request) -> Response:
        who = await viewer(request)
        return page(request, who, "kinds.html", {"kinds": list(registry)})

    @ui.get("/kinds/{name}", response_class=HTMLResponse)
    async def kind_page(request: Request, name: str) -> Response:
        who = await viewer(request)
        kind = registry.get(name)
        schema = kind.input_model.model_json_schema()
        return page(
            request,
            who,
            "kind.html",
            {
                "kind": kind,
                "fields": forms.fields(schema),
                "raw_field": forms.RAW_FIELD,
                "output_schema": pretty(kind.output_model.model_json_schema()),
            },
        )

    @ui.post("/kinds/{name}/try", response_class=HTMLResponse)
    async def try_it(request: Request, name: str) -> Response:
        """Submit as POST /v1/tasks/{kind} with ``Prefer: wait`` does: the one submit
        path, then wait for the end (if asked) and show the task."""
        who = await viewer(request)
        values = await form_of(request, who)
        kind = registry.get(name)
        schema = kind.input_model.model_json_schema()
        context: dict[str, Any] = {"kind": kind}
        try:
            data = forms.read(values, schema)
            inputs = strict(kind.input_model).model_validate(data)
        except forms.FormInvalid as exc:
            context["problems"] = [str(exc)]
            return page(request, who, "_try_result.html", context, status_code=422)
        except ValidationError as exc:
            context["problems"] = [
                f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
            ]
            return page(request, who, "_try_result.html", context, status_code=422)
        svc = services()
        submitted = await svc.submitter.submit(kind, inputs, caller=who.caller)
        record = submitted.record
        if values.get("wait") and not record.final:
            record = await svc.store.wait(record.id, TRY_WAIT_S) or record
        context["task"] = record
        return page(request, who, "_try_result.html", context)

    # --- dead letters (operators) ----------------------------------------------------

    def sync_store() -> Any:
        return open_store(settings)

    async def in_store(call: Any, *args: Any) -> Any:
        """A dead-letter call on the sync store (the async one has none), in a thread."""

        def run() -> Any:
            store = sync_store()
            try:
                return call(store, *args)
            finally:
                store.close()

        return await anyio.to_thread.run_sync(run)

    @ui.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(request: Request) -> Response:
        who = await viewer(request)
        who.require_operator()
        entries, total, failed = await in_store(
            lambda s: (s.dead_letter_list(200), s.dead_letter_count(), s.failed_deliveries(100))
        )
        return page(
            request,
            who,
            "dead_letters.html",
            {"entries": entries, "total": total, "failed_deliveries": failed},
        )

    @ui.get("/dead-letters/purge", response_class=HTMLResponse)
    async def purge_confirm(request: Request) -> Response:
        who = await viewer(request)
        who.require_operator()
        total = await in_store(lambda s: s.dead_letter_count())
        return page(request, who, "purge.html", {"total": total})

    @ui.post("/dead-letters/purge")
    async def purge_all(request: Request) -> Response:
        who = await viewer(request)
        who.require_operator()
        await form_of(request, who)
        purged = await in_store(lambda s: s.dead_letter_purge())
        log.info("dashboard: %s purged %d dead letters", who.caller.name, purged)
        return RedirectResponse("/ui/dead-letters", status_code=303)

    @ui.get("/dead-letters/{task_id}", response_class=HTMLResponse)
    async def dead_letter(request: Request, task_id: str) -> Response:
        who = await viewer(request)
        who.require_operator()
        entry = await in_store(lambda s: s.dead_letter_get(task_id))
        if entry is None:
            raise TaskNotFound(f"task {task_id} is not in the dead-letter queue")
        return page(request, who, "dead_letter.html", {"entry": entry})

    @ui.post("/dead-letters/{task_id}/retry")
    async def retry(request: Request, task_id: str) -> Response:
        from asyncml.cli.dlq import replay  # the one replay path (the CLI's)

        who = await viewer(request)
        who.require_operator()
        await form_of(request, who)
        store = await anyio.to_thread.run_sync(sync_store)
        try:
            entry = await anyio.to_thread.run_sync(store.dead_letter_get, task_id)
            if entry is None:
                raise TaskNotFound(f"task {task_id} is not in the dead-letter queue")
            new_id = await replay(store, services().submitter, entry)
        finally:
            store.close()
        return RedirectResponse(f"/ui/tasks/{new_id}", status_code=303)

    @ui.post("/dead-letters/{task_id}/purge")
    async def purge_one(request: Request, task_id: str) -> Response:
        who = await viewer(request)
        who.require_operator()
        await form_of(request, who)
        if not await in_store(lambda s: s.dead_letter_remove(task_id)):
            raise TaskNotFound(f"task {task_id} is not in the dead-letter queue")
        return RedirectResponse("/ui/dead-letters", status_code=303)

    return ui


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form (what the pages and htmx send; the API's body limit applies);
    the first value of each field."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    return {name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()}


def _local(target: str) -> str:
    """Only a path of the dashboard: never an open redirect to another site."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"
