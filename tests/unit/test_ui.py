"""The dashboard served by the API (embedded store, no worker): headers, sessions, access,
escaping. The browser tests (tests/integration/test_ui_browser.py) drive the live parts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asyncml.api import create_app
from asyncml.auth import make_key
from asyncml.settings import Settings
from asyncml.store import Delivery, ErrorBody, TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore
from asyncml.ui.headers import CSP

XSS = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def test_every_page_carries_the_csp_and_frame_headers(client: TestClient) -> None:
    for path in ("/ui/", "/ui/tasks", "/ui/kinds", "/ui/kinds/audio.length", "/ui/dead-letters"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-frame-options"] == "DENY"
        assert "<script>" not in answer.text  # no inline script: only <script src=...>
    assert client.get("/ui/static/app.css").headers["x-frame-options"] == "DENY"


def test_ui_false_serves_no_dashboard(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", ui=False, _env_file=None)
    with TestClient(create_app(settings)) as client:
        assert client.get("/ui/").status_code == 404
        assert client.get("/ui/tasks").status_code == 404


def test_task_values_are_escaped_in_the_page(client: TestClient, store: SqliteTaskStore) -> None:
    record = TaskRecord(
        id="t-xss",
        kind="audio.length",
        status=TaskStatus.QUEUED,
        submitted_at=utcnow(),
        queue="audio",
        input_json='{"audio_url": "' + XSS.replace('"', '\\"') + '"}',
    )
    assert store.create(record)
    store.finish("t-xss", TaskStatus.FAILURE, utcnow(), error=ErrorBody(type="x", message=XSS))
    page = client.get("/ui/tasks/t-xss").text
    assert XSS not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_an_unknown_task_is_the_404_page(client: TestClient) -> None:
    answer = client.get("/ui/tasks/nope")
    assert answer.status_code == 404
    assert "text/html" in answer.headers["content-type"]


def test_a_form_without_the_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/ui/tasks")  # the session (and its token) is made on a first visit
    answer = client.post("/ui/kinds/audio.length/try", data={"audio_url": "http://a.example/x"})
    assert answer.status_code == 403


def test_try_it_refuses_an_invalid_input_naming_the_field(client: TestClient) -> None:
    csrf = _csrf(client.get("/ui/kinds/audio.length").text)
    answer = client.post(
        "/ui/kinds/audio.length/try", data={"csrf": csrf, "audio_url": "not a url"}
    )
    assert answer.status_code == 422
    assert "audio_url" in answer.text


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    settings = Settings(data_dir=tmp_path / "data", auth="on", _env_file=None)
    store = SqliteTaskStore(settings.store_path(), ttl_s=settings.result_ttl_s)
    keys = {}
    for name, operator in (("alice", False), ("bob", False), ("ops", True)):
        key, record = make_key(name, operator=operator)
        assert store.key_add(record)
        keys[name] = key
    store.close()
    return settings, keys


def _login(client: TestClient, key: str) -> None:
    csrf = _csrf(client.get("/ui/login").text)
    answer = client.post(
        "/ui/login", data={"csrf": csrf, "key": key, "next": "/ui/tasks"}, follow_redirects=False
    )
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    assert key.lower() not in cookie


def test_with_keys_on_the_dashboard_asks_to_sign_in(keyed: tuple[Settings, dict[str, str]]) -> None:
    settings, _ = keyed
    with TestClient(create_app(settings)) as client:
        answer = client.get("/ui/tasks", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/ui/login")


def test_a_key_sees_its_own_task_and_a_404_for_anothers(
    keyed: tuple[Settings, dict[str, str]],
) -> None:
    settings, keys = keyed
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {keys['alice']}"}
        url = "http://a.example/x.wav"
        task_id = client.post("/v1/tasks/audio.length", json={"audio_url": url}, headers=headers)
        task_id = task_id.json()["id"]
        _login(client, keys["bob"])
        assert client.get(f"/ui/tasks/{task_id}").status_code == 404
        assert task_id not in client.get("/ui/tasks").text
        assert client.get("/ui/dead-letters").status_code == 403
        assert keys["bob"] not in client.get("/ui/tasks").text
    with TestClient(create_app(settings)) as client:
        _login(client, keys["alice"])
        page = client.get(f"/ui/tasks/{task_id}")
        assert page.status_code == 200 and url in page.text
    with TestClient(create_app(settings)) as client:
        _login(client, keys["ops"])
        assert task_id in client.get("/ui/tasks").text
        assert client.get("/ui/dead-letters").status_code == 200


def test_a_wrong_key_does_not_sign_in(keyed: tuple[Settings, dict[str, str]]) -> None:
    settings, _ = keyed
    with TestClient(create_app(settings)) as client:
        csrf = _csrf(client.get("/ui/login").text)
        answer = client.post("/ui/login", data={"csrf": csrf, "key": "aml_wrong", "next": "/ui/"})
        assert answer.status_code == 401


def test_failed_webhook_deliveries_are_listed_for_operators(
    client: TestClient, store: SqliteTaskStore
) -> None:
    record = TaskRecord(
        id="t-hook", kind="audio.length", status=TaskStatus.QUEUED, submitted_at=utcnow()
    )
    assert store.create(record)
    failed = Delivery(state="failed", attempts=8, last_error="<b>refused</b>", updated_at=utcnow())
    store.set_delivery("t-hook", "completed", failed)
    table = client.get("/ui/dead-letters").text.split('id="failed-deliveries"', 1)[1]
    assert "/ui/tasks/t-hook" in table
    assert "&lt;b&gt;refused&lt;/b&gt;" in table
