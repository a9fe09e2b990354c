"""Signed callbacks by the Standard Webhooks scheme (as Svix and Replicate use).

A delivery carries three headers::

    webhook-id:         msg_<task id>_<event>   (the same on every retry: receivers dedupe)
    webhook-timestamp:  unix seconds            (receivers reject stale ones: no replays)
    webhook-signature:  v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">

The secret is ``whsec_`` followed by base64 key bytes, so any Standard Webhooks library
verifies our deliveries, and ``verify_signature`` here verifies theirs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from asyncml.errors import AsyncmlError, FetchBlocked, FetchError
from asyncml.records import INTERMEDIATE_EVENTS, Event, TaskEvent
from asyncml.store import Delivery, TaskRecord, TaskStore, utcnow

if TYPE_CHECKING:
    from asyncml.fetch import Fetcher
    from asyncml.settings import Settings

log = logging.getLogger(__name__)

_PREFIX = "whsec_"


class WebhookVerificationError(AsyncmlError):
    """The signature, timestamp or headers of a delivery do not check out."""

    type = "webhook_invalid"
    status_code = 400


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return _PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str, msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify_signature(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    tolerance: int = 300,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery and return its JSON payload; raise WebhookVerificationError if not.

    ``headers`` may use any case. A timestamp more than ``tolerance`` seconds away from now
    is refused, so a captured delivery cannot be replayed later. Several signatures
    (space-separated, during a secret rotation) pass if any one matches.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise WebhookVerificationError("missing or malformed webhook headers") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook timestamp outside the tolerance: refused")
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret, msg_id, timestamp, raw).split(",", 1)[1]
    for candidate in signatures:
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            payload: dict[str, Any] = json.loads(raw)
            return payload
    raise WebhookVerificationError("no webhook signature matches")


# --- delivery, run by the worker's webhook task ------------------------------------------


def notice(record: TaskRecord, event: Event) -> dict[str, Any]:
    """The body of a notice: what a receiver needs to act without calling back."""
    return {
        "event": event,
        "id": record.id,
        "kind": record.kind,
        "status": record.status.value,
        "result": record.result,
        "error": None if record.error is None else record.error.model_dump(),
        "started_at": None if record.started_at is None else record.started_at.isoformat(),
        "finished_at": None if record.finished_at is None else record.finished_at.isoformat(),
    }


def event_notice(event: TaskEvent) -> dict[str, Any]:
    """The body of an intermediate notice (progress, log, output): the event as streamed."""
    return {**event.wire(), "event": event.type, "id": event.task_id, "event_id": event.id}


def retry_delay(settings: Settings, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: doubling from the base, capped, 10 % jitter."""
    base: float = min(
        settings.webhook_retry_base_s * 2 ** (attempt - 1), settings.webhook_retry_max_s
    )
    return base * (1 + random.uniform(-0.1, 0.1))  # noqa: S311  # jitter, not security


def _without_path(message: str, url: str) -> str:
    """Error text with the URL cut to its origin: a webhook URL's path may be its token."""
    from asyncml.fetch import _redact, origin

    return message.replace(_redact(url), origin(url)).replace(url, origin(url))


def _post_intermediate(
    settings: Settings, fetcher: Fetcher, url: str, task_id: str, event: str, body: dict[str, Any]
) -> None:
    """One attempt, logged if it fails: the next event (or ``completed``) says more."""
    if settings.webhook_secret is None:
        return
    raw = json.dumps(body, separators=(",", ":")).encode()
    msg_id = f"msg_{task_id}_{event}_{body['event_id']}"
    headers = signed_headers(settings.webhook_secret.get_secret_value(), msg_id, raw)
    try:
        status = fetcher.post(url, raw, headers)
    except FetchError as exc:
        log.info("%s webhook of task %s not delivered: %s", event, task_id, exc.message)
        return
    if not 200 <= status < 300:
        log.info("%s webhook of task %s answered HTTP %d", event, task_id, status)


def deliver_once(
    settings: Settings,
    store: TaskStore,
    fetcher: Fetcher,
    *,
    task_id: str,
    event: Event,
    body: dict[str, Any],
    attempt: int,
) -> float | None:
    """Make one delivery attempt and record how it went.

    Returns the delay before the next attempt, or None when done (delivered, or failed
    for good: a 4xx, a refused address, or the last attempt spent).
    """
    record = store.get(task_id)
    if record is None or record.callback is None:
        return None
    if event in INTERMEDIATE_EVENTS:
        _post_intermediate(settings, fetcher, record.callback.url, task_id, event, body)
        return None
    stored = record.deliveries.get(event)
    if stored is not None and (stored.state != "pending" or stored.attempts > attempt):
        return None  # settled, or a later attempt already ran: this message is stale
    if stored is not None and stored.attempts == attempt:
        # This attempt was made but its successor never got queued: queue it, POST nothing.
        return retry_delay(settings, attempt)
    if settings.webhook_secret is None:
        store.set_delivery(
            task_id,
            event,
            Delivery(
                state="failed",
                attempts=attempt,
                last_error="this worker has no ASYNCML_WEBHOOK_SECRET to sign with",
                updated_at=utcnow(),
            ),
        )
        return None
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = signed_headers(
        settings.webhook_secret.get_secret_value(), f"msg_{task_id}_{event}", raw
    )
    status: int | None = None
    error: str | None = None
    retryable = True
    url = record.callback.url
    try:
        status = fetcher.post(url, raw, headers)
    except FetchBlocked as exc:
        error, retryable = _without_path(exc.message, url), False
    except FetchError as exc:
        error = _without_path(exc.message, url)
    if status is not None:
        if 200 <= status < 300:
            store.set_delivery(
                task_id,
                event,
                Delivery(
                    state="delivered", attempts=attempt, last_status=status, updated_at=utcnow()
                ),
            )
            return None
        error = f"HTTP {status}"
        retryable = status >= 500 or status == 429
    final = not retryable or attempt >= settings.webhook_max_attempts
    store.set_delivery(
        task_id,
        event,
        Delivery(
            state="failed" if final else "pending",
            attempts=attempt,
            last_status=status,
            last_error=error,
            updated_at=utcnow(),
        ),
    )
    if final:
        log.warning(
            "webhook %s of task %s failed after %d attempt(s): %s", event, task_id, attempt, error
        )
        return None
    return retry_delay(settings, attempt)
