"""Signing and verifying notices by the Standard Webhooks scheme."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as TheirError

from asyncml.webhooks import (
    WebhookVerificationError,
    new_secret,
    signed_headers,
    verify_signature,
)

BODY = json.dumps({"id": "t1", "status": "SUCCESS"}).encode()


def test_new_secret_is_a_whsec_value() -> None:
    assert new_secret().startswith("whsec_")
    assert new_secret() != new_secret()


def test_our_signature_verifies_with_the_reference_library() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_t1_completed", BODY)
    assert Webhook(secret).verify(BODY, headers) == {"id": "t1", "status": "SUCCESS"}


def test_reference_library_signature_verifies_with_ours() -> None:
    secret = new_secret()
    now = time.time()
    signature = Webhook(secret).sign("msg_1", _datetime(now), BODY.decode())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signature,
    }
    assert verify_signature(BODY, headers, secret)["id"] == "t1"


def test_tampered_body_fails_verification_in_both_libraries() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_t1_completed", BODY)
    tampered = BODY.replace(b"SUCCESS", b"FAILURE")
    with pytest.raises(WebhookVerificationError):
        verify_signature(tampered, headers, secret)
    with pytest.raises(TheirError):
        Webhook(secret).verify(tampered, headers)


def test_other_secret_fails_verification() -> None:
    headers = signed_headers(new_secret(), "msg_1", BODY)
    with pytest.raises(WebhookVerificationError, match="no webhook signature matches"):
        verify_signature(BODY, headers, new_secret())


def test_stale_timestamp_is_refused_as_a_replay() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_1", BODY, now=time.time() - 301)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify_signature(BODY, headers, secret, tolerance=300)


def test_headers_are_matched_in_any_case() -> None:
    secret = new_secret()
    headers = {k.upper(): v for k, v in signed_headers(secret, "msg_1", BODY).items()}
    assert verify_signature(BODY, headers, secret)["status"] == "SUCCESS"


def test_missing_headers_are_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_signature(BODY, {}, new_secret())


def test_any_of_several_signatures_may_match_during_a_rotation() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers(new, "msg_1", BODY)
    other = signed_headers(old, "msg_1", BODY, now=int(headers["webhook-timestamp"]))
    headers["webhook-signature"] = f"{other['webhook-signature']} {headers['webhook-signature']}"
    assert verify_signature(BODY, headers, old)["id"] == "t1"
    assert verify_signature(BODY, headers, new)["id"] == "t1"


def _datetime(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(ts), tz=UTC)
