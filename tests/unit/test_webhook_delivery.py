"""One delivery attempt's bookkeeping, with a stand-in for the network (unit level)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from asyncml.errors import FetchError
from asyncml.settings import Settings
from asyncml.store import Callback, Delivery, TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore
from asyncml.webhooks import deliver_once, new_secret, retry_delay

URL = "https://hooks.example.org/services/T000/B000/s3cr3t-token"


@dataclass
class Poster:
    """Answers POSTs from a script; records what was sent."""

    answers: list[int | Exception] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.sent.append(body)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def hooked(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, webhook_secret=new_secret())


@pytest.fixture
def task(store: SqliteTaskStore) -> str:
    store.create(
        TaskRecord(
            id="t1",
            kind="audio.length",
            status=TaskStatus.QUEUED,
            submitted_at=utcnow(),
            callback=Callback(url=URL),
        )
    )
    store.finish("t1", TaskStatus.SUCCESS, utcnow(), result={"audio_length": 1.0})
    return "t1"


def attempt(settings: Settings, store: SqliteTaskStore, poster: Poster, n: int) -> float | None:
    fetcher: Any = poster  # stands in for the Fetcher: only post() is used
    return deliver_once(
        settings, store, fetcher, task_id="t1", event="completed", body={"id": "t1"}, attempt=n
    )


def delivery(store: SqliteTaskStore) -> Delivery:
    record = store.get("t1")
    assert record is not None
    return record.deliveries["completed"]


def test_success_is_recorded_as_delivered(
    hooked: Settings, store: SqliteTaskStore, task: str
) -> None:
    poster = Poster([204])
    assert attempt(hooked, store, poster, 1) is None
    assert (delivery(store).state, delivery(store).attempts, delivery(store).last_status) == (
        "delivered",
        1,
        204,
    )


def test_server_error_asks_for_another_attempt(
    hooked: Settings, store: SqliteTaskStore, task: str
) -> None:
    assert attempt(hooked, store, Poster([503]), 1) is not None
    assert delivery(store).state == "pending"


def test_redelivered_attempt_after_success_posts_nothing(
    hooked: Settings, store: SqliteTaskStore, task: str
) -> None:
    attempt(hooked, store, Poster([200]), 1)
    again = Poster()
    assert attempt(hooked, store, again, 1) is None
    assert again.sent == []
    assert delivery(store).state == "delivered"


def test_attempt_made_but_not_followed_requeues_without_posting(
    hooked: Settings, store: SqliteTaskStore, task: str
) -> None:
    attempt(hooked, store, Poster([500]), 1)
    again = Poster()
    assert attempt(hooked, store, again, 1) is not None
    assert again.sent == []


def test_stale_attempt_is_skipped(hooked: Settings, store: SqliteTaskStore, task: str) -> None:
    attempt(hooked, store, Poster([500]), 1)
    attempt(hooked, store, Poster([500]), 2)
    late = Poster()
    assert attempt(hooked, store, late, 1) is None
    assert late.sent == []


def test_error_text_does_not_show_the_url_path(
    hooked: Settings, store: SqliteTaskStore, task: str
) -> None:
    attempt(hooked, store, Poster([FetchError(f"connection refused by {URL}")]), 1)
    error = delivery(store).last_error
    assert error is not None and "s3cr3t-token" not in error
    assert "https://hooks.example.org" in error


def test_worker_without_a_secret_records_why(
    settings: Settings, store: SqliteTaskStore, task: str
) -> None:
    assert attempt(settings, store, Poster(), 1) is None
    assert delivery(store).state == "failed"
    assert "ASYNCML_WEBHOOK_SECRET" in (delivery(store).last_error or "")


def test_retry_delays_double_up_to_the_cap(hooked: Settings) -> None:
    capped = hooked.model_copy(update={"webhook_retry_base_s": 30.0, "webhook_retry_max_s": 600.0})
    delays = [retry_delay(capped, n) for n in range(1, 9)]
    assert 27 <= delays[0] <= 33
    assert 54 <= delays[1] <= 66
    assert all(d <= 660 for d in delays)
    assert delays[-1] >= 540


def test_a_delivery_given_up_on_is_listed_until_it_is_delivered(
    store: SqliteTaskStore, task: str
) -> None:
    store.set_delivery(task, "completed", Delivery(state="failed", attempts=3, last_status=500))
    (listed,) = store.failed_deliveries()
    assert (listed.task.id, listed.event, listed.delivery.attempts) == (task, "completed", 3)
    store.set_delivery(task, "completed", Delivery(state="delivered", attempts=1))
    assert store.failed_deliveries() == []
