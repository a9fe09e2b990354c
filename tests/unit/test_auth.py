"""API keys, per-key isolation, listing, limits and the submit options that go with them.

The embedded engine with keys on: a real SQLite store and broker, no worker (a test that
needs a task finished finishes it through the store, as a worker would).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from asyncml.api import create_app
from asyncml.api.limits import DEPTH_TTL_S, QueueGate
from asyncml.auth import CACHE_S, digest, key_file_line, make_key, parse_key_file
from asyncml.errors import ServiceUnavailable
from asyncml.settings import Settings
from asyncml.store import TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore

DRAW = {"draw_date": "20-11-2026"}
Headers = Callable[[str], dict[str, str]]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """Provisioned keys: alice and bob (defaults), tiny (2/second, 2 unfinished) and capped
    (2 unfinished at the default rate, so that its cap is reached before any rate)."""
    made = {
        "alice": make_key("alice"),
        "bob": make_key("bob"),
        "tiny": make_key("tiny", rate="2/second", max_unfinished=2),
        "capped": make_key("capped", max_unfinished=2),
    }
    (tmp_path / "keys").write_text("\n".join(key_file_line(rec) for _, rec in made.values()))
    return {name: key for name, (key, _) in made.items()}


@pytest.fixture
def keyed_settings(tmp_path: Path, keys: dict[str, str]) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        auth="on",
        api_keys_file=tmp_path / "keys",
        max_queue_depth=0,
    )


@pytest.fixture
def api(keyed_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(keyed_settings)) as test_client:
        yield test_client


@pytest.fixture
def as_(keys: dict[str, str]) -> Headers:
    return lambda name: {"Authorization": f"Bearer {keys[name]}"}


def submit(api: TestClient, headers: dict[str, str], body: dict[str, str] = DRAW) -> str:
    response = api.post("/v1/tasks/euro.results", json=body, headers=headers)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer aml_not-a-real-key", "Bearer ", "Basic YWxpY2U6eA==", "aml_x"],
)
def test_missing_or_wrong_key_gets_the_same_401_with_www_authenticate(
    api: TestClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = api.get("/v1/tasks", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json() == {
        "type": "unauthorized",
        "message": "send a valid API key: Authorization: Bearer aml_...",
    }


def test_every_task_route_asks_for_a_key(api: TestClient) -> None:
    for method, path in [
        ("POST", "/v1/tasks/euro.results"),
        ("POST", "/v1/tasks/euro.results/batch"),
        ("GET", "/v1/tasks/abc"),
        ("DELETE", "/v1/tasks/abc"),
        ("GET", "/v1/kinds"),
        ("POST", "/euro/results"),
        ("GET", "/task/abc"),
    ]:
        assert api.request(method, path, json=DRAW).status_code == 401, (method, path)


def test_health_probes_and_metrics_need_no_key(api: TestClient) -> None:
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200
    assert api.get("/metrics").status_code == 200


def test_metrics_token_when_set_is_asked_for(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "d", metrics_token="s3cret")
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_another_keys_task_is_404_on_every_route_and_left_untouched(
    api: TestClient, as_: Headers
) -> None:
    task_id = submit(api, as_("alice"))
    assert api.get(f"/v1/tasks/{task_id}", headers=as_("bob")).status_code == 404
    assert api.get(f"/v1/tasks/{task_id}?wait=0.2", headers=as_("bob")).status_code == 404
    assert api.delete(f"/v1/tasks/{task_id}", headers=as_("bob")).status_code == 404
    assert api.get(f"/task/{task_id}", headers=as_("bob")).status_code == 404
    assert api.get("/v1/tasks", headers=as_("bob")).json()["tasks"] == []
    unknown = api.get("/v1/tasks/00000000-0000-0000-0000-000000000000", headers=as_("bob"))
    theirs = api.get(f"/v1/tasks/{task_id}", headers=as_("bob"))
    assert theirs.json()["type"] == unknown.json()["type"] == "task_not_found"
    mine = api.get(f"/v1/tasks/{task_id}", headers=as_("alice")).json()
    assert mine["status"] == "QUEUED"  # bob's cancel did nothing
    assert "owner" not in mine


def test_idempotency_keys_are_per_api_key(api: TestClient, as_: Headers) -> None:
    same = {"Idempotency-Key": "order-1"}
    first = api.post("/v1/tasks/euro.results", json=DRAW, headers=as_("alice") | same)
    other = api.post("/v1/tasks/euro.results", json=DRAW, headers=as_("bob") | same)
    again = api.post("/v1/tasks/euro.results", json=DRAW, headers=as_("alice") | same)
    assert (first.status_code, other.status_code, again.status_code) == (202, 202, 200)
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]


def test_listing_pages_through_own_tasks_newest_first(api: TestClient, as_: Headers) -> None:
    made = [submit(api, as_("alice")) for _ in range(5)]
    submit(api, as_("bob"))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/tasks", params=params, headers=as_("alice")).json()
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]


def test_listing_filters_by_status_and_kind(
    api: TestClient, as_: Headers, keyed_settings: Settings
) -> None:
    done, waiting = submit(api, as_("alice")), submit(api, as_("alice"))
    store = SqliteTaskStore(keyed_settings.store_path(), ttl_s=60)
    store.start(done, utcnow())
    store.finish(done, TaskStatus.SUCCESS, utcnow(), result=[1, 2, 3, 4, 5, 1, 2])
    listed = api.get("/v1/tasks?status=SUCCESS", headers=as_("alice")).json()["tasks"]
    assert [t["id"] for t in listed] == [done]
    by_kind = api.get("/v1/tasks?kind=euro.results", headers=as_("alice")).json()["tasks"]
    assert {t["id"] for t in by_kind} == {done, waiting}
    assert api.get("/v1/tasks?kind=audio.length", headers=as_("alice")).json()["tasks"] == []


@pytest.mark.parametrize(
    "query", ["state=QUEUED", "kind=nope.nothing", "limit=0", "cursor=garbage", "status=DONE"]
)
def test_listing_refuses_what_it_does_not_understand(
    api: TestClient, as_: Headers, query: str
) -> None:
    response = api.get(f"/v1/tasks?{query}", headers=as_("alice"))
    assert response.status_code == 422
    assert response.json()["type"] == "input_invalid"


def test_key_over_its_rate_gets_429_with_retry_after_and_ratelimit_headers(
    api: TestClient, as_: Headers
) -> None:
    answers = [api.get("/v1/tasks", headers=as_("tiny")) for _ in range(5)]
    codes = [a.status_code for a in answers]
    assert codes[:2] == [200, 200]
    assert 429 in codes
    limited = answers[codes.index(429)]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-limit"] == "2"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert limited.json()["type"] == "rate_limited"
    assert answers[0].headers["ratelimit-limit"] == "2"
    # Another key is not slowed by tiny's flood.
    assert api.get("/v1/tasks", headers=as_("alice")).status_code == 200


def test_key_at_its_cap_of_unfinished_tasks_gets_429_until_one_finishes(
    api: TestClient, as_: Headers, keyed_settings: Settings
) -> None:
    first = submit(api, as_("capped"))
    submit(api, as_("capped"))
    refused = api.post("/v1/tasks/euro.results", json=DRAW, headers=as_("capped"))
    assert refused.status_code == 429
    assert "unfinished" in refused.json()["message"]
    assert "retry-after" in refused.headers
    assert len(api.get("/v1/tasks", headers=as_("alice")).json()["tasks"]) == 0
    store = SqliteTaskStore(keyed_settings.store_path(), ttl_s=60)
    store.start(first, utcnow())
    store.finish(first, TaskStatus.SUCCESS, utcnow(), result=[1, 2, 3, 4, 5, 1, 2])
    assert api.post("/v1/tasks/euro.results", json=DRAW, headers=as_("capped")).status_code == 202


def test_retry_with_the_same_idempotency_key_at_the_cap_gets_its_original_task(
    api: TestClient, as_: Headers
) -> None:
    once = {"Idempotency-Key": "order-7"}
    first = api.post("/v1/tasks/euro.results", json=DRAW, headers=as_("capped") | once)
    submit(api, as_("capped"))  # the key is now at its cap of 2 unfinished tasks
    again = api.post("/v1/tasks/euro.results", json=DRAW, headers=as_("capped") | once)
    assert (first.status_code, again.status_code) == (202, 200), again.json()
    assert again.json()["id"] == first.json()["id"]
    other = api.post(
        "/v1/tasks/euro.results", json=DRAW, headers=as_("capped") | {"Idempotency-Key": "order-8"}
    )
    assert other.status_code == 429  # a new request is still refused at the cap
    after = api.post(
        "/v1/tasks/euro.results", json=DRAW, headers=as_("capped") | {"Idempotency-Key": "order-8"}
    )
    assert after.status_code == 429  # and its refused key did not stay bound


class ManualClock:
    """A monotonic clock that moves only when told: a test ages a reading at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_full_queue_refuses_submissions_with_503_and_queues_nothing(
    tmp_path: Path, queued_messages: Callable[[], int], settings: Settings
) -> None:
    capped = settings.model_copy(update={"max_queue_depth": 3})
    clock = ManualClock()
    with TestClient(create_app(capped)) as client:
        gate = client.app.state.services.submitter.queues  # type: ignore[attr-defined]  # a Starlette app
        assert isinstance(gate, QueueGate)
        gate.clock = clock
        accepted = 0
        for _ in range(4):
            accepted += client.post("/v1/tasks/euro.results", json=DRAW).status_code == 202
        clock.advance(DEPTH_TTL_S)  # the API reads depths at most once a second
        refused = client.post("/v1/tasks/euro.results", json=DRAW)
    assert accepted == 4  # the first read saw an empty queue: the cap may overshoot by 1 s
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert "full" in refused.json()["message"]
    assert queued_messages() == accepted


def test_revoked_key_is_refused_within_a_second(api: TestClient, keyed_settings: Settings) -> None:
    key, record = make_key("carol")
    store = SqliteTaskStore(keyed_settings.store_path(), ttl_s=60)
    assert store.key_add(record)
    headers = {"Authorization": f"Bearer {key}"}
    assert api.get("/v1/tasks", headers=headers).status_code == 200
    assert store.key_revoke("carol")
    revoked_at = time.monotonic()
    while True:  # the key was looked up (and remembered) before the revoke
        asked_after = time.monotonic() - revoked_at
        if api.get("/v1/tasks", headers=headers).status_code == 401:
            break
        assert asked_after < CACHE_S + 0.5, f"still accepted {asked_after:.2f} s after revoking"
        time.sleep(0.05)  # probe interval, bounded by the assertion above


def test_a_key_name_is_taken_once(keyed_settings: Settings) -> None:
    store = SqliteTaskStore(keyed_settings.store_path(), ttl_s=60)
    assert store.key_add(make_key("dave")[1])
    assert not store.key_add(make_key("dave")[1])
    assert [k.name for k in store.key_list()] == ["dave"]


def test_the_store_keeps_only_the_keys_digest(keyed_settings: Settings) -> None:
    key, record = make_key("erin", rate="5/second")
    store = SqliteTaskStore(keyed_settings.store_path(), ttl_s=60)
    store.key_add(record)
    path = keyed_settings.store_path()
    raw = b"".join(f.read_bytes() for f in path.parent.glob(f"{path.name}*"))  # + WAL
    assert key.encode() not in raw
    assert digest(key).encode() in raw
    assert key.startswith("aml_") and len(key) >= 4 + 43  # 32 random bytes


def test_key_file_lines_round_trip_and_errors_name_the_line() -> None:
    _, record = make_key("ci", rate="10/second", max_unfinished=7)
    (parsed,) = parse_key_file(["# provisioned\n", key_file_line(record)])
    assert (parsed.name, parsed.digest, parsed.rate, parsed.max_unfinished) == (
        "ci",
        record.digest,
        "10/second",
        7,
    )
    with pytest.raises(ValueError, match="line 2: the digest must be 64 hex"):
        parse_key_file(["", "ci abc"])
    with pytest.raises(ValueError, match="line 1: 'often' is not a rate"):
        parse_key_file([f"ci {record.digest} often"])


@pytest.mark.parametrize(
    ("host", "auth", "required"),
    [
        ("127.0.0.1", "auto", False),
        ("::1", "auto", False),
        ("localhost", "auto", False),
        ("0.0.0.0", "auto", True),
        ("10.1.2.3", "auto", True),
        ("0.0.0.0", "off", False),
        ("127.0.0.1", "on", True),
    ],
)
def test_keys_are_required_off_loopback_unless_turned_off(
    host: str, auth: str, required: bool
) -> None:
    assert Settings(_env_file=None, api_host=host, auth=auth).auth_required is required


def test_prefer_wait_answers_200_with_the_finished_task(
    client: TestClient, store: SqliteTaskStore
) -> None:
    def worker() -> None:  # finishes whatever is queued, once
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            rows = store._execute("SELECT id FROM tasks WHERE status = 'QUEUED'").fetchall()
            for (task_id,) in rows:
                store.start(task_id, utcnow())
                store.finish(task_id, TaskStatus.SUCCESS, utcnow(), result=[1, 2, 3, 4, 5, 6, 7])
                return
            time.sleep(0.02)

    thread = threading.Thread(target=worker)
    thread.start()
    response = client.post("/v1/tasks/euro.results", json=DRAW, headers={"Prefer": "wait=5"})
    thread.join()
    assert response.status_code == 200
    assert response.json()["status"] == "SUCCESS"
    assert response.headers["preference-applied"] == "wait=5"


def test_prefer_wait_answers_202_when_the_task_is_not_final_in_time(client: TestClient) -> None:
    began = time.monotonic()
    response = client.post("/v1/tasks/euro.results", json=DRAW, headers={"Prefer": "wait=0.3"})
    assert response.status_code == 202
    assert response.json()["status"] == "QUEUED"
    assert 0.3 <= time.monotonic() - began < 3


def test_batch_queues_one_task_per_input_in_order(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    dates = ["20-11-2026", "17-11-2026", "13-11-2026"]
    response = client.post(
        "/v1/tasks/euro.results/batch", json={"inputs": [{"draw_date": d} for d in dates]}
    )
    assert response.status_code == 202
    tasks = response.json()["tasks"]
    assert len({t["id"] for t in tasks}) == 3
    assert queued_messages() == 3


def test_batch_with_one_bad_input_is_422_naming_it_and_queues_nothing(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    inputs = [{"draw_date": "20-11-2026"}, {"draw_date": "20/11/2026"}]
    response = client.post("/v1/tasks/euro.results/batch", json={"inputs": inputs})
    assert response.status_code == 422
    assert any(e["loc"][:3] == ["body", "inputs", 1] for e in response.json()["errors"])
    assert queued_messages() == 0


def test_batch_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "d", max_batch_size=2)
    with TestClient(create_app(settings)) as client:
        inputs = [{"draw_date": "20-11-2026"}] * 3
        response = client.post("/v1/tasks/euro.results/batch", json={"inputs": inputs})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/a.wav", "http://169.254.169.254/latest", "http://[::1]/a.wav"],
)
def test_url_input_whose_address_is_refused_is_422_at_submit(
    client: TestClient, queued_messages: Callable[[], int], url: str
) -> None:
    response = client.post("/v1/tasks/audio.length", json={"audio_url": url})
    assert response.status_code == 422
    assert "audio_url: refusing" in response.json()["message"]
    assert queued_messages() == 0


class _SlowDepths:
    """An engine whose depth reading blocks until released: a slow broker round trip."""

    def __init__(self) -> None:
        self.depth = 0
        self.reading = threading.Event()  # set once a reading after the first has begun
        self.release = threading.Event()
        self.readings = 0

    def queue_depths(self) -> dict[str, int]:
        self.readings += 1
        if self.readings > 1:
            self.reading.set()
            self.release.wait(10)
        return {"euro": self.depth}


def test_a_depth_refresh_in_progress_does_not_hold_up_other_submissions() -> None:
    engine = _SlowDepths()
    clock = ManualClock()
    gate = QueueGate(engine, max_depth=5, clock=clock)  # type: ignore[arg-type]  # one method

    async def scenario() -> list[str]:
        await gate.admit("euro")  # the first reading: there is nothing older to use
        clock.advance(DEPTH_TTL_S)  # a second later
        engine.depth = 5
        order: list[str] = []

        async def refresher() -> None:
            with pytest.raises(ServiceUnavailable, match="is full"):  # it read the new depth
                await gate.admit("euro")
            order.append("refresher")

        async def other() -> None:
            await gate.admit("euro")  # the older reading (0 waiting) admits it at once
            order.append("other")
            engine.release.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(refresher)
            # Once the refresher is in the broker round trip, it holds the lock.
            began = await anyio.to_thread.run_sync(engine.reading.wait, 10)
            assert began, "the refresher never began its reading"
            tasks.start_soon(other)
        return order

    assert anyio.run(scenario) == ["other", "refresher"]
    with pytest.raises(ServiceUnavailable, match="is full"):  # and so do the next ones
        anyio.run(gate.admit, "euro")
