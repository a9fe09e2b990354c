from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asyncml.api import create_app
from asyncml.settings import Settings
from asyncml.store import ErrorBody, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore
from asyncml.webhooks import new_secret

WAV_URL = "http://audio.example/a.wav"  # a name, judged by the worker; never fetched here


def test_submit_returns_202_with_id_and_location(client: TestClient) -> None:
    response = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL})
    assert response.status_code == 202
    body = response.json()
    assert body["kind"] == "audio.length"
    assert body["status"] == "QUEUED"
    assert response.headers["location"] == f"/v1/tasks/{body['id']}"


def test_submitted_task_is_queued_on_the_broker_and_readable(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    task_id = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}).json()["id"]
    task = client.get(f"/v1/tasks/{task_id}").json()
    assert task["status"] == "QUEUED"
    assert task["submitted_at"] is not None
    assert task["started_at"] is None
    assert queued_messages() == 1


def test_invalid_input_returns_422_naming_the_field_and_queues_nothing(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    response = client.post("/v1/tasks/audio.length", json={"audio_url": "not a url"})
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "input_invalid"
    assert "audio_url" in body["message"]
    assert queued_messages() == 0


def test_non_http_scheme_is_refused_with_422(client: TestClient) -> None:
    response = client.post("/v1/tasks/audio.length", json={"audio_url": "file:///etc/passwd"})
    assert response.status_code == 422


def test_missing_body_returns_422(client: TestClient) -> None:
    response = client.post("/v1/tasks/audio.length", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_body_that_is_not_json_returns_415(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    response = client.post("/v1/tasks/audio.length", data={"audio_url": WAV_URL})
    assert response.status_code == 415
    assert response.json()["type"] == "unsupported_media_type"
    assert client.post("/audio/length", content=b"audio_url=x").status_code == 415
    assert queued_messages() == 0


def test_unknown_field_is_refused_with_422_naming_it(client: TestClient) -> None:
    response = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL, "urgent": True})
    assert response.status_code == 422
    assert "urgent" in response.json()["message"]


def test_classic_route_refuses_unknown_fields_too(client: TestClient) -> None:
    response = client.post("/audio/length", json={"audio_url": WAV_URL, "audio_uri": WAV_URL})
    assert response.status_code == 422


def test_unknown_kind_returns_404_listing_known_kinds(client: TestClient) -> None:
    response = client.post("/v1/tasks/nope.nothing", json={})
    assert response.status_code == 404
    assert response.json()["type"] == "unknown_kind"
    assert "audio.length" in response.json()["message"]


def test_unknown_id_returns_404(client: TestClient) -> None:
    response = client.get("/v1/tasks/does-not-exist")
    assert response.status_code == 404
    assert response.json()["type"] == "task_not_found"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/tasks/some-id", "DELETE, GET, POST"),  # two routes share this path shape
        ("GET", "/audio/length", "POST"),
        ("DELETE", "/task/some-id", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_wrong_method_gets_405_with_every_allowed_method(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["type"] == "method_not_allowed"
    assert allow in response.json()["message"]


def test_cancel_queued_task_marks_it_cancelled(client: TestClient) -> None:
    task_id = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}).json()["id"]
    response = client.delete(f"/v1/tasks/{task_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    assert client.get(f"/v1/tasks/{task_id}").json()["status"] == "CANCELLED"


def test_cancelled_task_is_not_started_by_a_worker(
    client: TestClient, store: SqliteTaskStore
) -> None:
    task_id = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}).json()["id"]
    client.delete(f"/v1/tasks/{task_id}")
    assert store.start(task_id, utcnow()) == 0


def test_cancel_final_task_returns_409(client: TestClient, store: SqliteTaskStore) -> None:
    task_id = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}).json()["id"]
    store.start(task_id, utcnow())
    store.finish(task_id, TaskStatus.SUCCESS, utcnow(), result={"audio_length": 1.0})
    response = client.delete(f"/v1/tasks/{task_id}")
    assert response.status_code == 409
    assert response.json()["type"] == "task_conflict"


def test_cancel_unknown_task_returns_404(client: TestClient) -> None:
    assert client.delete("/v1/tasks/does-not-exist").status_code == 404


def test_long_poll_returns_once_the_task_finishes(
    client: TestClient, store: SqliteTaskStore
) -> None:
    task_id = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}).json()["id"]
    store.start(task_id, utcnow())
    finisher = threading.Timer(
        0.3,
        store.finish,
        args=(task_id, TaskStatus.SUCCESS, utcnow()),
        kwargs={"result": {"audio_length": 2.0}},
    )
    finisher.start()
    response = client.get(f"/v1/tasks/{task_id}", params={"wait": 30})
    finisher.join()
    assert response.json()["status"] == "SUCCESS"
    assert response.json()["result"] == {"audio_length": 2.0}


def test_long_poll_returns_the_unfinished_task_after_the_wait(client: TestClient) -> None:
    task_id = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}).json()["id"]
    response = client.get(f"/v1/tasks/{task_id}", params={"wait": 0.2})
    assert response.status_code == 200
    assert response.json()["status"] == "QUEUED"


def test_wait_over_30_seconds_is_refused(client: TestClient) -> None:
    assert client.get("/v1/tasks/x", params={"wait": 31}).status_code == 422


def test_kinds_lists_input_and_output_schemas(client: TestClient) -> None:
    kinds = {k["name"]: k for k in client.get("/v1/kinds").json()}
    audio = kinds["audio.length"]
    assert audio["queue"] == "audio"
    assert "audio_url" in audio["input_schema"]["properties"]
    assert "audio_length" in audio["output_schema"]["properties"]
    assert audio["classic_path"] == "/audio/length"


def test_openapi_documents_each_kind_input(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/tasks/audio.length"]["post"]
    assert operation["operationId"] == "submit_audio_length"
    assert "AudioLengthIn" in str(operation["requestBody"])
    assert "audio_length" in str(operation["x-asyncml-output"])


def test_classic_submit_returns_201_with_id(client: TestClient) -> None:
    response = client.post("/audio/length", json={"audio_url": WAV_URL, "callback": False})
    assert response.status_code == 201
    assert set(response.json()) == {"id"}


def test_classic_task_answers_202_while_pending(client: TestClient) -> None:
    task_id = client.post("/audio/length", json={"audio_url": WAV_URL}).json()["id"]
    response = client.get(f"/task/{task_id}")
    assert response.status_code == 202
    assert response.json() == {"id": task_id, "status": "PENDING", "error": None, "result": None}


def test_classic_task_answers_200_with_result_when_done(
    client: TestClient, store: SqliteTaskStore
) -> None:
    task_id = client.post("/audio/length", json={"audio_url": WAV_URL}).json()["id"]
    store.start(task_id, utcnow())
    store.finish(task_id, TaskStatus.SUCCESS, utcnow(), result={"audio_length": 30.0})
    response = client.get(f"/task/{task_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "SUCCESS"
    assert response.json()["result"]["audio_length"] == 30.0


def test_classic_task_reports_failure_as_readable_error(
    client: TestClient, store: SqliteTaskStore
) -> None:
    task_id = client.post("/audio/length", json={"audio_url": WAV_URL}).json()["id"]
    error = ErrorBody(type="audio_not_audio", message="not a recognised audio format")
    store.finish(task_id, TaskStatus.FAILURE, utcnow(), error=error)
    response = client.get(f"/task/{task_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "FAILURE"
    assert response.json()["error"] == "not a recognised audio format"


def test_classic_unknown_id_returns_404(client: TestClient) -> None:
    assert client.get("/task/does-not-exist").status_code == 404


def test_classic_invalid_input_returns_422(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    assert client.post("/audio/length", json={"audio": WAV_URL}).status_code == 422
    assert queued_messages() == 0


def test_healthz_answers_ok(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_ready_on_the_embedded_default(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "broker": "ok", "result_store": "ok"}


def test_classic_callback_true_without_a_default_url_is_accepted(client: TestClient) -> None:
    response = client.post("/audio/length", json={"audio_url": WAV_URL, "callback": True})
    assert response.status_code == 201


def test_callback_url_is_refused_when_webhooks_are_not_configured(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    response = client.post(
        "/v1/tasks/audio.length",
        json={"audio_url": WAV_URL, "callback_url": "http://127.0.0.1:9/hook"},
    )
    assert response.status_code == 422
    assert "ASYNCML_WEBHOOK_SECRET" in response.json()["message"]
    assert queued_messages() == 0


def test_unknown_callback_event_is_refused(client: TestClient) -> None:
    response = client.post(
        "/v1/tasks/audio.length",
        json={"audio_url": WAV_URL, "callback_url": "http://h/x", "callback_events": ["done"]},
    )
    assert response.status_code == 422
    assert "callback_events" in response.json()["message"]


def test_oversized_body_is_refused_with_413(client: TestClient) -> None:
    huge = {"audio_url": WAV_URL, "padding": "x" * 2_000_000}
    response = client.post("/v1/tasks/audio.length", json=huge)
    assert response.status_code == 413
    assert response.json()["type"] == "body_too_large"


def test_oversized_chunked_body_is_refused_with_413(client: TestClient) -> None:
    chunks = (b"x" * 65_536 for _ in range(40))  # no Content-Length: counted as it streams
    response = client.post(
        "/v1/tasks/audio.length", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_same_idempotency_key_and_body_returns_the_original_task(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}, headers=headers)
    again = client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert queued_messages() == 1


def test_same_idempotency_key_with_another_body_is_refused(
    client: TestClient, queued_messages: Callable[[], int]
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}, headers=headers)
    other = client.post(
        "/v1/tasks/audio.length", json={"audio_url": WAV_URL + "?v=2"}, headers=headers
    )
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["message"]
    assert queued_messages() == 1


def test_without_idempotency_key_each_submit_is_a_new_task(client: TestClient) -> None:
    ids = {
        client.post("/v1/tasks/audio.length", json={"audio_url": WAV_URL}).json()["id"]
        for _ in range(2)
    }
    assert len(ids) == 2


def test_classic_callback_must_be_a_boolean(client: TestClient) -> None:
    response = client.post("/audio/length", json={"audio_url": WAV_URL, "callback": 0})
    assert response.status_code == 422


@pytest.mark.parametrize("path", ["/v1/tasks/audio.length", "/audio/length"])
def test_audio_url_with_credentials_is_refused_with_422_naming_the_rule(
    client: TestClient, queued_messages: Callable[[], int], path: str
) -> None:
    response = client.post(path, json={"audio_url": "http://alice:s3cret@audio.example/a.wav"})

    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "input_invalid"
    assert body["message"].startswith("audio_url: ")
    assert "credentials" in body["message"]
    assert "s3cret" not in body["message"]
    assert queued_messages() == 0


def test_callback_url_with_credentials_is_refused_with_422_naming_the_rule(
    tmp_path: Path, queued_messages: Callable[[], int]
) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        webhook_secret=new_secret(),
        webhook_allow_loopback=True,
    )
    with TestClient(create_app(settings)) as hooked:
        response = hooked.post(
            "/v1/tasks/audio.length",
            json={"audio_url": WAV_URL, "callback_url": "http://alice:s3cret@127.0.0.1:9/hook"},
        )

    assert response.status_code == 422
    assert response.json()["message"].startswith("callback_url: ")
    assert "credentials" in response.json()["message"]
    assert queued_messages() == 0
