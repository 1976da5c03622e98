"""The provider's webhook, reached through the gateway like the real provider would: only a
fresh delivery signed with the shared secret is accepted, and each event only once."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from servicekit.testing.waiting import wait_until_sync
from svctools.launcher import DEV_WEBHOOK_SECRET

from .helpers import (
    WEBHOOK_SIGNATURE_HEADER,
    User,
    assert_error_envelope,
    place_order,
    register,
    sign_webhook,
)

PATH = "/payments/webhooks/provider"
TOLERANCE_SECONDS = 300


@dataclass
class SettledPayment:
    owner: User
    order_id: str
    payment: dict[str, Any]

    def event(self, event_id: str | None = None) -> bytes:
        """A provider event about this payment's charge, as the provider would send it."""
        return json.dumps(
            {
                "id": event_id or f"evt_{uuid.uuid4().hex}",
                "type": "charge.succeeded",
                "created": int(time.time()),
                "data": {
                    "charge_id": self.payment["provider_reference"],
                    "status": "succeeded",
                    "amount": self.payment["amount"],
                    "currency": self.payment["currency"],
                    "idempotency_key": self.payment["id"],
                    "metadata": {"order_id": self.order_id, "payment_id": self.payment["id"]},
                },
            }
        ).encode()


@pytest.fixture(scope="module")
def settled(api: httpx.Client) -> SettledPayment:
    owner = register(api, "Payer")
    placed = place_order(api, owner)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]

    def succeeded() -> dict[str, Any] | None:
        items = api.get(f"/payments?order_id={order_id}", headers=owner.auth).json()["items"]
        return items[0] if items and items[0]["status"] == "succeeded" else None

    payment = wait_until_sync(succeeded, timeout=15, what="succeeded")
    assert payment, "the payment did not succeed"
    return SettledPayment(owner, order_id, payment)


def _deliver(api: httpx.Client, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[WEBHOOK_SIGNATURE_HEADER] = signature
    return api.post(PATH, content=body, headers=headers)


def _state(api: httpx.Client, settled: SettledPayment) -> tuple[str, str]:
    owner = settled.owner.auth
    payment = api.get(f"/payments/{settled.payment['id']}", headers=owner).json()
    order = api.get(f"/orders/{settled.order_id}", headers=owner).json()
    return payment["status"], order["status"]


class TestSignature:
    def test_a_delivery_signed_with_the_shared_secret_is_accepted(
        self, api: httpx.Client, settled: SettledPayment
    ) -> None:
        body = settled.event()
        response = _deliver(api, body, sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()), body))
        assert response.status_code == 200, response.text
        assert response.json()["result"] in ("applied", "ignored")

    @pytest.mark.parametrize(
        "signature",
        [
            None,
            "",
            "garbage",
            "t=,v1=",
            f"t={int(time.time())}",
            f"v1={'0' * 64}",
            f"t={int(time.time())},v1={'0' * 64}",
            f"t={int(time.time())},v0=abc",
        ],
        ids=[
            "missing",
            "empty",
            "garbage",
            "empty_parts",
            "no_digest",
            "no_timestamp",
            "zero_digest",
            "unknown_scheme",
        ],
    )
    def test_a_missing_or_malformed_signature_is_401(
        self, api: httpx.Client, settled: SettledPayment, signature: str | None
    ) -> None:
        before = _state(api, settled)
        error = assert_error_envelope(_deliver(api, settled.event(), signature), 401)
        assert error["code"] == "invalid_signature"
        assert _state(api, settled) == before

    def test_a_signature_made_with_another_secret_is_401(
        self, api: httpx.Client, settled: SettledPayment
    ) -> None:
        body = settled.event()
        forged = sign_webhook("not-the-shared-secret", int(time.time()), body)
        assert_error_envelope(_deliver(api, body, forged), 401)

    def test_a_body_changed_after_signing_is_401(
        self, api: httpx.Client, settled: SettledPayment
    ) -> None:
        body = settled.event()
        signature = sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()), body)
        tampered = body.replace(b'"charge.succeeded"', b'"charge.failed"')
        assert tampered != body
        assert_error_envelope(_deliver(api, tampered, signature), 401)

    def test_a_timestamp_changed_after_signing_is_401(
        self, api: httpx.Client, settled: SettledPayment
    ) -> None:
        body = settled.event()
        now = int(time.time())
        digest = sign_webhook(DEV_WEBHOOK_SECRET, now - 10, body).split("v1=", 1)[1]
        assert_error_envelope(_deliver(api, body, f"t={now},v1={digest}"), 401)


class TestReplay:
    @pytest.mark.parametrize("age", [-(TOLERANCE_SECONDS + 60), TOLERANCE_SECONDS + 60, 86_400])
    def test_a_delivery_signed_outside_the_window_is_refused(
        self, api: httpx.Client, settled: SettledPayment, age: int
    ) -> None:
        body = settled.event()
        stale = sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()) - age, body)
        error = assert_error_envelope(_deliver(api, body, stale), 400)
        assert error["code"] == "webhook_timestamp_out_of_tolerance"
        # The event was not recorded: a fresh delivery of it is still accepted.
        fresh = _deliver(api, body, sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()), body))
        assert fresh.status_code == 200, fresh.text

    def test_the_same_delivery_twice_is_refused_the_second_time(
        self, api: httpx.Client, settled: SettledPayment
    ) -> None:
        body = settled.event()
        signature = sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()), body)
        assert _deliver(api, body, signature).status_code == 200
        before = _state(api, settled)
        error = assert_error_envelope(_deliver(api, body, signature), 409)
        assert error["code"] == "webhook_replayed"
        assert _state(api, settled) == before

    def test_the_same_event_re_signed_later_is_refused(
        self, api: httpx.Client, settled: SettledPayment
    ) -> None:
        event_id = f"evt_{uuid.uuid4().hex}"
        first = settled.event(event_id)
        assert (
            _deliver(
                api, first, sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()), first)
            ).status_code
            == 200
        )
        again = settled.event(event_id)
        error = assert_error_envelope(
            _deliver(api, again, sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()) + 1, again)), 409
        )
        assert error["code"] == "webhook_replayed"

    def test_an_event_for_another_payment_is_refused(
        self, api: httpx.Client, settled: SettledPayment
    ) -> None:
        event = json.loads(settled.event())
        event["data"]["metadata"]["order_id"] = str(uuid.uuid4())
        body = json.dumps(event).encode()
        response = _deliver(api, body, sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()), body))
        assert_error_envelope(response, 409)
