"""Signed callbacks on the real stack: a worker delivers them, retries, records the outcome."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asyncml.webhooks import verify_signature

from .conftest import WEBHOOK_SECRET
from .fixture_server import FixtureServer
from .http_api import wait_final
from .receiver import HANG, Receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture
def hook(receiver: Receiver) -> str:
    """A fresh path on the receiver for this test."""
    return f"hook-{uuid.uuid4().hex[:8]}"


def submit(api: httpx.Client, audio_url: str, callback_url: str, **options: Any) -> str:
    body = {"audio_url": audio_url, "callback_url": callback_url, **options}
    response = api.post("/v1/tasks/audio.length", json=body)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


def delivery_settles(api: httpx.Client, task_id: str, event: str = "completed") -> dict[str, Any]:
    """The task's delivery record once it is delivered or failed (bounded wait)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        delivery: dict[str, Any] | None = (
            api.get(f"/v1/tasks/{task_id}").json()["deliveries"].get(event)
        )
        if delivery is not None and delivery["state"] != "pending":
            return delivery
        time.sleep(0.05)  # the record has no notification of its own; bounded by the deadline
    raise AssertionError(f"delivery of {event} for {task_id} did not settle in 30 s")


def test_completed_notice_is_signed_and_verifies(
    api: httpx.Client, files: FixtureServer, receiver: Receiver, hook: str
) -> None:
    task_id = submit(api, files.url("tone-5s.wav"), receiver.url(hook))
    wait_final(api, task_id)
    (post,) = receiver.wait_for(hook, 1)
    payload = verify_signature(post.body, post.headers, WEBHOOK_SECRET)
    assert payload["id"] == task_id
    assert payload["event"] == "completed"
    assert payload["status"] == "SUCCESS"
    assert round(payload["result"]["audio_length"]) == 5
    assert post.headers["webhook-id"] == f"msg_{task_id}_completed"
    delivery = delivery_settles(api, task_id)
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        1,
        200,
    )


def test_tampered_notice_fails_verification(
    api: httpx.Client, files: FixtureServer, receiver: Receiver, hook: str
) -> None:
    task_id = submit(api, files.url("tone-5s.wav"), receiver.url(hook))
    wait_final(api, task_id)
    (post,) = receiver.wait_for(hook, 1)
    tampered = json.loads(post.body)
    tampered["status"] = "FAILURE"
    with pytest.raises(Exception, match="no webhook signature matches"):
        verify_signature(json.dumps(tampered), post.headers, WEBHOOK_SECRET)


def test_started_notice_comes_first_when_asked(
    api: httpx.Client, files: FixtureServer, receiver: Receiver, hook: str
) -> None:
    task_id = submit(
        api, files.url("tone-5s.wav"), receiver.url(hook), callback_events=["started", "completed"]
    )
    wait_final(api, task_id)
    posts = receiver.wait_for(hook, 2)
    events = [json.loads(p.body)["event"] for p in posts]
    assert sorted(events) == ["completed", "started"]
    assert json.loads(posts[events.index("started")].body)["status"] == "STARTED"


def test_receiver_failing_twice_gets_exactly_one_successful_delivery(
    api: httpx.Client, files: FixtureServer, receiver: Receiver, hook: str
) -> None:
    receiver.script[f"/{hook}"] = [500, 503, 200]
    task_id = submit(api, files.url("tone-5s.wav"), receiver.url(hook))
    wait_final(api, task_id)
    posts = receiver.wait_for(hook, 3)
    delivery = delivery_settles(api, task_id)
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        3,
        200,
    )
    assert len(receiver.posts(hook)) == 3
    assert {p.headers["webhook-id"] for p in posts} == {f"msg_{task_id}_completed"}


def test_hanging_receiver_times_out_and_is_retried(
    api: httpx.Client, files: FixtureServer, receiver: Receiver, hook: str
) -> None:
    receiver.script[f"/{hook}"] = [HANG, 200]
    task_id = submit(api, files.url("tone-5s.wav"), receiver.url(hook))
    wait_final(api, task_id)
    receiver.wait_for(hook, 2)
    delivery = delivery_settles(api, task_id)
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 2)


def test_delivery_that_never_succeeds_is_recorded_as_failed(
    api: httpx.Client, files: FixtureServer, receiver: Receiver, hook: str
) -> None:
    receiver.script[f"/{hook}"] = [500] * 10
    task_id = submit(api, files.url("tone-5s.wav"), receiver.url(hook))
    wait_final(api, task_id)
    delivery = delivery_settles(api, task_id)
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "failed",
        3,
        500,
    )
    assert len(receiver.posts(hook)) == 3  # ASYNCML_WEBHOOK_MAX_ATTEMPTS=3 in the stack


def test_client_error_is_not_retried(
    api: httpx.Client, files: FixtureServer, receiver: Receiver, hook: str
) -> None:
    receiver.script[f"/{hook}"] = [410]
    task_id = submit(api, files.url("tone-5s.wav"), receiver.url(hook))
    wait_final(api, task_id)
    delivery = delivery_settles(api, task_id)
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "failed",
        1,
        410,
    )


def test_callback_to_a_private_address_is_refused_at_submit(
    api: httpx.Client, files: FixtureServer
) -> None:
    # Decided from the literal address alone; no packet leaves the machine.
    response = api.post(
        "/v1/tasks/audio.length",
        json={"audio_url": files.url("tone-5s.wav"), "callback_url": "http://10.255.255.1/h"},
    )
    assert response.status_code == 422
    assert "private" in response.json()["message"]


def test_cancelled_task_sends_its_completed_notice(
    api: httpx.Client, files: FixtureServer, receiver: Receiver, hook: str
) -> None:
    blocker = api.post("/v1/tasks/audio.length", json={"audio_url": files.url("gate/tone-5s.wav")})
    assert files.gate_reached.wait(30)
    victim = submit(api, files.url("victim.wav"), receiver.url(hook))
    assert api.delete(f"/v1/tasks/{victim}").status_code == 200
    files.gate_open.set()
    wait_final(api, blocker.json()["id"])
    (post,) = receiver.wait_for(hook, 1)
    assert json.loads(post.body)["status"] == "CANCELLED"


def test_a_failed_delivery_is_listed_and_can_be_sent_again(
    api: httpx.Client,
    files: FixtureServer,
    receiver: Receiver,
    hook: str,
    stack_env: tuple[dict[str, str], str, Path],
) -> None:
    receiver.script[f"/{hook}"] = [500] * 3  # every attempt of the first schedule fails
    task_id = submit(api, files.url("tone-5s.wav"), receiver.url(hook))
    wait_final(api, task_id)
    assert delivery_settles(api, task_id)["state"] == "failed"
    env, _, _ = stack_env

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "asyncml", "webhooks", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = cli("failed", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = [f for f in json.loads(listed.stdout) if f["task_id"] == task_id]
    assert [(f["event"], f["attempts"], f["last_status"]) for f in mine] == [("completed", 3, 500)]
    assert mine[0]["url"] == f"http://127.0.0.1:{receiver.port}"  # the origin, not the path
    resent = cli("resend", task_id)
    assert resent.returncode == 0, resent.stderr
    delivery = delivery_settles(api, task_id)
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 1)
    assert len(receiver.posts(hook)) == 4
    again = cli("failed", "--json")
    assert task_id not in {f["task_id"] for f in json.loads(again.stdout)}
    refused = cli("resend", task_id)  # delivered: nothing to send again
    assert refused.returncode != 0 and "is delivered, not failed" in refused.stderr
