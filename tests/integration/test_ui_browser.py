"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real
``asyncml up`` (embedded) and, with keys on, the API and a worker on RabbitMQ + Redis.

Chromium comes from ``scripts/ensure-services.sh`` (never ``playwright install``: no
browser downloads here). Without it these tests skip on a developer's machine and fail
in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from asyncml.records import ErrorBody, TaskRecord, TaskStatus, utcnow
from asyncml.store.dead_letters import DeadLetter
from asyncml.store.sqlite import SqliteTaskStore

from .conftest import VhostPool
from .processes import Launcher, ServiceProcess, service_env, wait_until_ready
from .services import RedisServer, free_ports

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS = '<script>window.__xss = 1</script>"><img src=x onerror="window.__xss = 2">'
PAGE_TIMEOUT_MS = 30_000
expect.set_options(timeout=PAGE_TIMEOUT_MS)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run scripts/ensure-services.sh as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watched:
    """What a page did wrong: console errors, failed requests, error answers."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, browser: Browser, base_url: str) -> Watched:
        page = browser.new_context(base_url=base_url).new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        watched = cls(page)
        page.on(
            "console",
            lambda msg: watched.console_errors.append(msg.text) if msg.type == "error" else None,
        )
        page.on("requestfailed", lambda req: watched.failed.append(f"{req.url} {req.failure}"))
        page.on(
            "response",
            lambda res: (
                watched.failed.append(f"{res.url} {res.status}") if res.status >= 400 else None
            ),
        )
        return watched


@dataclass
class Stack:
    base_url: str
    launch: Launcher
    data_dir: Path
    process: ServiceProcess

    def restart(self) -> None:
        self.process.stop()
        self.process = self.launch("up", ["up", "--concurrency", "1"])
        wait_until_ready(self.base_url, self.process)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``asyncml up`` with one worker slot (so a second task waits its turn), keys off."""
    workdir = tmp_path_factory.mktemp("ui-embedded")
    (port,) = free_ports(1)
    env = service_env(
        data_dir=workdir / "data", api_port=port, extra={"ASYNCML_DEBUG_KINDS": "true"}
    )
    launch = Launcher(env, workdir)
    try:
        base_url = f"http://127.0.0.1:{port}"
        process = launch("up", ["up", "--concurrency", "1"])
        wait_until_ready(base_url, process)
        yield Stack(base_url, launch, workdir / "data", process)
    finally:
        launch.stop_all()


def _api(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=60)


def _submit(api: httpx.Client, kind: str, body: dict[str, object]) -> str:
    answer = api.post(f"/v1/tasks/{kind}", json=body)
    assert answer.status_code in (200, 202), answer.text
    task_id: str = answer.json()["id"]
    return task_id


def _finished(api: httpx.Client, task_id: str) -> dict[str, object]:
    body: dict[str, object] = api.get(f"/v1/tasks/{task_id}", params={"wait": 30}).json()
    assert body["status"] in ("SUCCESS", "FAILURE", "CANCELLED"), body
    return body


def test_every_page_loads_with_no_console_error_and_no_failed_request(
    embedded: Stack, browser: Browser
) -> None:
    with _api(embedded) as api:
        task_id = _submit(api, "debug.echo", {"payload": {"hello": "world"}})
        _finished(api, task_id)
    watched = Watched.open(browser, embedded.base_url)
    page = watched.page
    for path in (
        "/ui/",
        "/ui/tasks",
        "/ui/tasks?kind=debug.echo&status=SUCCESS&since=1h",
        f"/ui/tasks/{task_id}",
        "/ui/kinds",
        "/ui/kinds/model.iris",
        "/ui/kinds/debug.steps",
        "/ui/dead-letters",
        "/ui/dead-letters/purge",
    ):
        answer = page.goto(path, wait_until="networkidle")
        assert answer is not None and answer.status == 200, path
    page.goto("/ui/", wait_until="networkidle")
    assert page.locator(".chart canvas").count() == 3  # the charts were drawn
    assert watched.console_errors == []
    assert watched.failed == []


def test_try_it_on_model_iris_shows_the_prediction(embedded: Stack, browser: Browser) -> None:
    page = Watched.open(browser, embedded.base_url).page
    page.goto("/ui/kinds/model.iris")
    for name, value in (
        ("sepal_length", "5.1"),
        ("sepal_width", "3.5"),
        ("petal_length", "1.4"),
        ("petal_width", "0.2"),
    ):
        page.get_by_label(name, exact=True).fill(value)
    page.get_by_role("button", name="Submit").click()
    output = page.locator("#try-output")
    output.wait_for()
    assert '"setosa"' in (output.text_content() or "")
    assert page.locator("#try-status").text_content() == "SUCCESS"


def test_a_slow_task_moves_queued_started_success_on_its_page_without_a_reload(
    embedded: Stack, browser: Browser
) -> None:
    with _api(embedded) as api:
        blocker = _submit(api, "debug.steps", {"steps": 3, "step_s": 1.0})  # the one slot
        page = Watched.open(browser, embedded.base_url).page
        page.goto("/ui/kinds/debug.steps")
        page.locator("#in-steps").fill("6")
        page.locator("#in-step_s").fill("0.5")
        page.get_by_label("Wait for the result").uncheck()
        page.get_by_role("button", name="Submit").click()
        page.locator("#try-task-link").click()
        page.wait_for_url("**/ui/tasks/*")
        status = page.locator("#status")
        assert status.text_content() == "QUEUED"
        page.evaluate("window.__same_page = true")
        expect(status).to_have_text("STARTED")
        # (waits through the locator: the page's CSP refuses wait_for_function's eval)
        seen = []
        progress = page.locator("#progress")
        for at_least in ("[2-6]", "[4-6]"):
            expect(progress).to_have_attribute("value", re.compile(f"^{at_least}$"))
            seen.append(int(progress.get_attribute("value") or "0"))
        expect(status).to_have_text("SUCCESS")
        assert seen == sorted(seen) and seen[0] < seen[-1], seen
        assert page.evaluate("window.__same_page") is True  # no reload happened
        assert page.evaluate("document.getElementById('progress').value") == 6
        assert '"steps": 6' in (page.locator("#result").text_content() or "")
        _finished(api, blocker)


def test_cancel_on_a_queued_task_shows_cancelled(embedded: Stack, browser: Browser) -> None:
    with _api(embedded) as api:
        blocker = _submit(api, "debug.steps", {"steps": 2, "step_s": 1.0})
        queued = _submit(api, "debug.steps", {"steps": 1})
        page = Watched.open(browser, embedded.base_url).page
        page.goto(f"/ui/tasks/{queued}")
        assert page.locator("#status").text_content() == "QUEUED"
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#status")).to_have_text("CANCELLED")
        assert api.get(f"/v1/tasks/{queued}").json()["status"] == "CANCELLED"
        _finished(api, blocker)


def test_script_and_onerror_in_input_result_and_error_render_as_text(
    embedded: Stack, browser: Browser
) -> None:
    with _api(embedded) as api:
        echoed = _submit(api, "debug.echo", {"payload": XSS})
        _finished(api, echoed)
    store = SqliteTaskStore(embedded.data_dir / "tasks.sqlite3", ttl_s=3600)
    try:
        failed = TaskRecord(
            id="ui-xss-error",
            kind="debug.echo",
            status=TaskStatus.QUEUED,
            submitted_at=utcnow(),
            queue="unused",
        )
        assert store.create(failed)
        store.finish(
            failed.id, TaskStatus.FAILURE, utcnow(), error=ErrorBody(type="x", message=XSS)
        )
    finally:
        store.close()
    watched = Watched.open(browser, embedded.base_url)
    page = watched.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.goto(f"/ui/tasks/{echoed}", wait_until="networkidle")
    as_json = json.dumps(XSS)  # shown as pretty JSON: the string literal, as text
    assert as_json in (page.locator("#input").text_content() or "")
    assert as_json in (page.locator("#result").text_content() or "")
    page.goto(f"/ui/tasks/{failed.id}", wait_until="networkidle")
    assert as_json in (page.locator("#error").text_content() or "")
    page.goto("/ui/tasks", wait_until="networkidle")
    for path in (f"/ui/tasks/{echoed}", f"/ui/tasks/{failed.id}"):
        page.goto(path, wait_until="networkidle")
        assert page.evaluate("document.querySelectorAll('main img, main script').length") == 0
        assert page.evaluate("window.__xss === undefined")
    assert dialogs == []


def test_a_dead_letter_is_listed_and_retry_requeues_it_as_a_new_task(
    embedded: Stack, browser: Browser
) -> None:
    """The entry is put in the store as a worker puts a poison task's (how a task gets
    there is test_dlq.py's); Retry goes through the one replay path to the real worker."""
    entry = DeadLetter(
        task_id=str(uuid.uuid4()),
        kind="debug.echo",
        payload={"payload": "poisoned once"},
        attempts=3,
        error=ErrorBody(type="worker_lost", message="the worker died 3 times", attempts=3),
        dead_at=utcnow(),
    )
    store = SqliteTaskStore(embedded.data_dir / "tasks.sqlite3", ttl_s=3600)
    try:
        store.dead_letter_add(entry)
    finally:
        store.close()
    page = Watched.open(browser, embedded.base_url).page
    page.goto("/ui/dead-letters")
    page.locator(f"a[href='/ui/dead-letters/{entry.task_id}']").click()
    assert "poisoned once" in (page.locator("#payload").text_content() or "")
    page.get_by_role("button", name="Retry as a new task").click()
    page.wait_for_url("**/ui/tasks/*")
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != entry.task_id
    expect(page.locator("#status")).to_have_text("SUCCESS")
    page.goto("/ui/dead-letters")
    assert page.locator(f"a[href='/ui/dead-letters/{entry.task_id}']").count() == 0


def test_after_a_restart_the_list_and_the_charts_still_show_earlier_tasks(
    embedded: Stack, browser: Browser
) -> None:
    with _api(embedded) as api:
        task_id = _submit(api, "debug.echo", {"payload": "before the restart"})
        _finished(api, task_id)
    embedded.restart()
    page = Watched.open(browser, embedded.base_url).page
    page.goto("/ui/tasks")
    assert page.locator(f"a[href='/ui/tasks/{task_id}']").count() == 1
    page.goto("/ui/")
    assert int(page.locator("#finished-hour").text_content() or "0") >= 1


# --- keys on, RabbitMQ + Redis ---------------------------------------------------------


@dataclass
class KeyedStack:
    base_url: str
    keys: dict[str, str]


def _create_key(env: dict[str, str], name: str, *operator: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "asyncml", "keys", "create", name, *operator],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_vhosts: VhostPool
) -> Iterator[KeyedStack]:
    workdir = tmp_path_factory.mktemp("ui-keyed")
    (port,) = free_ports(1)
    with contextlib.ExitStack() as servers:
        redis = servers.enter_context(RedisServer(workdir / "redis"))
        env = service_env(
            data_dir=workdir / "data",
            api_port=port,
            broker_url=rabbitmq_vhosts.url(),
            backend_url=redis.url,
            extra={"ASYNCML_DEBUG_KINDS": "true", "ASYNCML_AUTH": "on"},
        )
        keys = {
            "alice": _create_key(env, "alice"),
            "bob": _create_key(env, "bob"),
            "ops": _create_key(env, "ops", "--operator"),
        }
        launch = Launcher(env, workdir)
        servers.callback(launch.stop_all)
        base_url = f"http://127.0.0.1:{port}"
        api_role = launch("api", ["api"])  # side by side with the worker, then awaited
        worker = launch("worker", ["worker", "--queues", "debug", "--concurrency", "1"])
        wait_until_ready(base_url, api_role)
        worker.wait_for_line(" ready.")
        yield KeyedStack(base_url, keys)


def _signed_in(browser: Browser, stack: KeyedStack, name: str) -> Watched:
    watched = Watched.open(browser, stack.base_url)
    page = watched.page
    page.goto("/ui/tasks")
    page.wait_for_url("**/ui/login**")
    page.get_by_label("API key").fill(stack.keys[name])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/tasks")
    assert stack.keys[name] not in page.content() and stack.keys[name] not in page.url
    return watched


def test_a_key_sees_only_its_own_tasks_and_the_404_page_for_anothers(
    keyed: KeyedStack, browser: Browser
) -> None:
    ids = {}
    for name in ("alice", "bob"):
        headers = {"Authorization": f"Bearer {keyed.keys[name]}"}
        with httpx.Client(base_url=keyed.base_url, headers=headers, timeout=60) as api:
            ids[name] = _submit(api, "debug.echo", {"payload": name})
            _finished(api, ids[name])
    page = _signed_in(browser, keyed, "bob").page
    assert page.locator(f"a[href='/ui/tasks/{ids['bob']}']").count() == 1
    assert page.locator(f"a[href='/ui/tasks/{ids['alice']}']").count() == 0
    answer = page.goto(f"/ui/tasks/{ids['alice']}")
    assert answer is not None and answer.status == 404
    assert page.locator("h1").text_content() == "Not found"


def test_a_key_that_is_not_an_operators_cannot_open_operator_pages(
    keyed: KeyedStack, browser: Browser
) -> None:
    page = _signed_in(browser, keyed, "alice").page
    answer = page.goto("/ui/dead-letters")
    assert answer is not None and answer.status == 403
    page.goto("/ui/")
    assert page.url.endswith("/ui/tasks")  # the overview is an operator's page


def test_an_operator_sees_workers_and_every_page_loads_cleanly_on_redis(
    keyed: KeyedStack, browser: Browser
) -> None:
    watched = _signed_in(browser, keyed, "ops")
    page = watched.page
    for path in ("/ui/", "/ui/tasks", "/ui/dead-letters", "/ui/kinds"):
        answer = page.goto(path, wait_until="networkidle")
        assert answer is not None and answer.status == 200, path
    page.goto("/ui/", wait_until="networkidle")
    assert "debug" in (page.locator("#workers").text_content() or "")
    assert watched.console_errors == []
    assert watched.failed == []
