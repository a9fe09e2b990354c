"""euro.results as declared: validation at the API, the result shapes, the cache, failures.

The source is a scripted server on 127.0.0.1; the worker side runs the kind (and the worker
runtime around it) in this process against the embedded SQLite store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from asyncml.engine.runtime import WorkerRuntime
from asyncml.kinds import TaskContext
from asyncml.registry import default_registry
from asyncml.settings import Settings
from asyncml.store import TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore
from asyncml.tasks._euro_settings import EuroSettings
from asyncml.tasks.euro import TIME_LIMIT_S, EuroDrawNotFound, EuroResultsIn, euro_results

from .euro_pages import EuroSource, Reply, results_page

DATE = "10-05-2024"  # a Friday
ISO = "2024-05-10"


@pytest.fixture
def settings(tmp_path: Path, source: EuroSource) -> Settings:
    """Overrides the conftest's: ``client`` and ``store`` use these settings too."""
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        fetch_allow_loopback=True,
        euro=EuroSettings(
            results_url=source.url_template, rate_per_s=100, retry_base_s=0.01, read_timeout_s=0.3
        ),
    )


@pytest.fixture
def run(settings: Settings, store: SqliteTaskStore) -> Callable[[str], dict[str, object]]:
    """Run the kind as a worker does: payload in, JSON data out."""

    def run_one(draw_date: str) -> dict[str, object]:
        return euro_results.run({"draw_date": draw_date}, TaskContext(settings, store=store))

    return run_one


def run_in_runtime(settings: Settings, store: SqliteTaskStore, draw_date: str) -> TaskRecord:
    """Through the worker runtime, so a failure is recorded as the task's {type, message}."""
    store.create(
        TaskRecord(id="t1", kind="euro.results", status=TaskStatus.QUEUED, submitted_at=utcnow())
    )
    runtime = WorkerRuntime(settings, store_retry_s=0.2)
    try:
        runtime.execute(euro_results, "t1", {"draw_date": draw_date})
    finally:
        runtime.store.close()
    record = store.get("t1")
    assert record is not None
    return record


# --- declaration -----------------------------------------------------------------------


def test_kind_is_built_in_on_its_own_queue_with_the_classic_route() -> None:
    kind = default_registry().get("euro.results")
    assert kind.queue == "euro"
    assert kind.classic is not None
    assert kind.classic.path == "/euro/results"


def test_default_retries_fit_inside_the_soft_time_limit() -> None:
    s = Settings(_env_file=None).euro
    request_s = s.connect_timeout_s + s.read_timeout_s
    worst_s = s.max_attempts * request_s + (s.max_attempts - 1) * s.retry_max_s
    assert worst_s < TIME_LIMIT_S == euro_results.limits.timeout_s


def test_classic_and_iso_forms_name_the_same_draw() -> None:
    assert EuroResultsIn(draw_date=DATE).draw_date == EuroResultsIn(draw_date=ISO).draw_date


def test_input_model_refuses_a_wednesday_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="not a draw day"):
        EuroResultsIn(draw_date="08-05-2024")


def test_input_model_refuses_a_timestamp() -> None:
    with pytest.raises(ValidationError, match="expected a date string"):
        EuroResultsIn.model_validate({"draw_date": 1715371200})


def test_input_model_refuses_a_datetime() -> None:
    with pytest.raises(ValidationError, match="without a time"):
        EuroResultsIn.model_validate({"draw_date": datetime(2024, 5, 10, 21, 0)})


def test_input_model_accepts_a_date_object() -> None:
    assert EuroResultsIn(draw_date=date(2024, 5, 10)).draw_date == date(2024, 5, 10)


# --- the API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draw_date", "reason"),
    [
        ("08-05-2024", "2024-05-08 (Wednesday) is not a draw day"),
        ("31-02-2024", "'31-02-2024' is not a real date"),
        ("03-01-2098", "is in the future"),
        ("06-02-2004", "before the first EuroMillions draw"),
        ("May 10th", "is not a date: write it DD-MM-YYYY or YYYY-MM-DD"),
    ],
)
def test_v1_refuses_a_date_without_a_draw_with_422_and_queues_nothing(
    client: TestClient, queued_messages: Callable[[], int], draw_date: str, reason: str
) -> None:
    response = client.post("/v1/tasks/euro.results", json={"draw_date": draw_date})
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "input_invalid"
    assert reason in body["message"]
    assert body["errors"][0]["loc"] == ["body", "draw_date"]
    assert queued_messages() == 0


def test_classic_route_refuses_a_wednesday_with_422(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    response = client.post("/euro/results", json={"draw_date": "08-05-2024", "callback": False})
    assert response.status_code == 422
    assert "not a draw day" in response.json()["message"]
    assert queued_messages() == 0


def test_classic_route_accepts_the_classic_form_with_201(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    response = client.post("/euro/results", json={"draw_date": DATE, "callback": False})
    assert response.status_code == 201
    assert set(response.json()) == {"id"}
    assert queued_messages() == 1


def test_v1_accepts_the_iso_form(client: TestClient) -> None:
    response = client.post("/v1/tasks/euro.results", json={"draw_date": ISO})
    assert response.status_code == 202


def test_classic_task_result_is_the_seven_numbers_flat(
    client: TestClient, store: SqliteTaskStore, source: EuroSource, settings: Settings
) -> None:
    source.serve(DATE, Reply(body=results_page((12, 3, 44, 27, 9), (11, 2))))
    task_id = client.post("/euro/results", json={"draw_date": DATE}).json()["id"]
    store.start(task_id, utcnow())
    result = euro_results.run({"draw_date": DATE}, TaskContext(settings, store=store))
    store.finish(task_id, TaskStatus.SUCCESS, utcnow(), result=result)
    response = client.get(f"/task/{task_id}")
    assert response.status_code == 200
    assert response.json() == {
        "id": task_id,
        "status": "SUCCESS",
        "error": None,
        "result": [12, 3, 44, 27, 9, 11, 2],
    }
    assert client.get(f"/v1/tasks/{task_id}").json()["result"]["numbers"] == [12, 3, 44, 27, 9]


# --- results and the cache -------------------------------------------------------------


def test_result_has_the_v1_shape(
    run: Callable[[str], dict[str, object]], source: EuroSource
) -> None:
    source.serve(DATE, Reply(body=results_page((12, 3, 44, 27, 9), (11, 2))))
    assert run(DATE) == {
        "draw_date": ISO,
        "numbers": [12, 3, 44, 27, 9],
        "stars": [11, 2],
        "source_url": f"http://127.0.0.1:{source.port}/results/{DATE}",
        "jackpot": "€17,000,000",
        "draw_number": 1734,
        "cached": False,
    }


def test_same_date_again_is_answered_from_the_cache_without_a_request(
    run: Callable[[str], dict[str, object]], source: EuroSource
) -> None:
    path = source.serve(DATE, Reply(body=results_page()))
    first = run(DATE)
    second = run(ISO)
    assert source.count(path) == 1
    assert second == {**first, "cached": True}


def test_cache_is_shared_through_the_store_by_every_worker(
    settings: Settings, store: SqliteTaskStore, source: EuroSource
) -> None:
    path = source.serve(DATE, Reply(body=results_page()))
    euro_results.run({"draw_date": DATE}, TaskContext(settings, store=store))
    other_worker = SqliteTaskStore(settings.store_path(), ttl_s=60)
    try:
        out = euro_results.run({"draw_date": DATE}, TaskContext(settings, store=other_worker))
    finally:
        other_worker.close()
    assert out["cached"] is True
    assert source.count(path) == 1


def test_page_served_after_500_twice_gives_the_result(
    run: Callable[[str], dict[str, object]], source: EuroSource
) -> None:
    path = source.serve(DATE, Reply(500), Reply(500), Reply(body=results_page()))
    assert run(DATE)["numbers"] == [12, 3, 44, 27, 9]
    assert source.count(path) == 3


def test_failed_draw_is_not_cached(
    run: Callable[[str], dict[str, object]], source: EuroSource
) -> None:
    path = source.serve(DATE, Reply(404), Reply(body=results_page()))
    with pytest.raises(EuroDrawNotFound, match="HTTP 404"):
        run(DATE)
    assert run(DATE)["cached"] is False
    assert source.count(path) == 2


# --- failures, as the task records them ------------------------------------------------


def test_404_fails_the_task_as_draw_not_found(
    settings: Settings, store: SqliteTaskStore, source: EuroSource
) -> None:
    record = run_in_runtime(settings, store, DATE)
    assert record.status is TaskStatus.FAILURE
    assert record.error is not None
    assert record.error.type == "euro_draw_not_found"
    assert record.error.message == (
        f"no draw result is published at http://127.0.0.1:{source.port}/results/{DATE}: "
        "the source answered HTTP 404"
    )


def test_page_without_balls_drawn_fails_the_task_as_a_changed_page(
    settings: Settings, store: SqliteTaskStore, source: EuroSource
) -> None:
    source.serve(DATE, Reply(body=results_page(balls_drawn=False)))
    record = run_in_runtime(settings, store, DATE)
    assert record.error is not None
    assert record.error.type == "euro_page_changed"
    assert "no #ballsDrawn element" in record.error.message


def test_out_of_range_number_fails_the_task_and_is_not_cached(
    settings: Settings, store: SqliteTaskStore, source: EuroSource
) -> None:
    source.serve(DATE, Reply(body=results_page((1, 2, 3, 4, 51), (1, 2))))
    record = run_in_runtime(settings, store, DATE)
    assert record.error is not None
    assert record.error.type == "euro_page_changed"
    assert "outside 1-50" in record.error.message
    assert store.cache_get(f"euro.results:v1:{ISO}") is None


def test_source_failing_every_time_fails_the_task_with_the_last_cause(
    settings: Settings, store: SqliteTaskStore, source: EuroSource
) -> None:
    source.serve(DATE, Reply(500), Reply(503))
    record = run_in_runtime(settings, store, DATE)
    assert record.error is not None
    assert record.error.type == "fetch_failed"
    assert "HTTP 503" in record.error.message
    assert "gave up after 3 attempts" in record.error.message


def test_redirect_away_from_the_draw_page_is_draw_not_found(
    run: Callable[[str], dict[str, object]], source: EuroSource
) -> None:
    source.serve(DATE, Reply(302, headers={"Location": "/results/latest"}))
    source.serve("latest", Reply(body=results_page()))
    with pytest.raises(EuroDrawNotFound, match=r"redirects to .*latest, which is not that draw"):
        run(DATE)
