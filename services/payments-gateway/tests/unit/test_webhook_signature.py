"""The webhook signature check against the provider simulator's own signing function."""

from __future__ import annotations

import pytest

from payments_gateway.errors import InvalidWebhookSignature, MalformedWebhook, StaleWebhook
from payments_gateway.webhooks import parse_event, sign, verify_signature
from svctools.simulator import sign_webhook

SECRET = "whsec_unit"
BODY = (
    b'{"id":"evt_1","type":"charge.succeeded","created":1,"data":{"charge_id":"ch_1",'
    b'"status":"succeeded","amount":"21.00","currency":"USD","idempotency_key":"k",'
    b'"metadata":{"payment_id":"p"}}}'
)
NOW = 1_800_000_000


def verify(header: str | None, *, body: bytes = BODY, now: float = NOW) -> int:
    return verify_signature(secret=SECRET, header=header, body=body, now=now, tolerance=300)


class TestWebhookSignature:
    def test_the_providers_signature_is_accepted(self) -> None:
        assert verify(sign_webhook(SECRET, NOW, BODY)) == NOW

    def test_our_signer_matches_the_providers(self) -> None:
        assert sign(SECRET, NOW, BODY) == sign_webhook(SECRET, NOW, BODY)

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "garbage",
            f"t={NOW}",
            "v1=" + "0" * 64,
            f"t=abc,v1={'0' * 64}",
            f"t={NOW},v1=" + "0" * 64,
            f"t={NOW},v1=ü" + "0" * 63,
            "t=" + "9" * 5000,
        ],
    )
    def test_a_missing_malformed_or_wrong_signature_is_refused(self, header: str | None) -> None:
        with pytest.raises(InvalidWebhookSignature):
            verify(header)

    def test_another_secret_is_refused(self) -> None:
        with pytest.raises(InvalidWebhookSignature):
            verify(sign_webhook("whsec_other", NOW, BODY))

    def test_a_tampered_body_is_refused(self) -> None:
        header = sign_webhook(SECRET, NOW, BODY)

        with pytest.raises(InvalidWebhookSignature):
            verify(header, body=BODY.replace(b"21.00", b"1.00"))

    def test_a_changed_timestamp_breaks_the_signature(self) -> None:
        digest = sign_webhook(SECRET, NOW, BODY).split(",")[1]

        with pytest.raises(InvalidWebhookSignature):
            verify(f"t={NOW + 1},{digest}")

    @pytest.mark.parametrize("age", [301, -301, 86_400])
    def test_a_timestamp_outside_the_window_is_refused(self, age: int) -> None:
        with pytest.raises(StaleWebhook):
            verify(sign_webhook(SECRET, NOW - age, BODY))

    @pytest.mark.parametrize("age", [0, 299, -299])
    def test_a_timestamp_inside_the_window_is_accepted(self, age: int) -> None:
        assert verify(sign_webhook(SECRET, NOW - age, BODY)) == NOW - age

    def test_any_of_several_v1_signatures_may_match(self) -> None:
        good = sign_webhook(SECRET, NOW, BODY).split(",")[1]

        assert verify(f"t={NOW},v1={'0' * 64},{good}") == NOW


class TestWebhookBody:
    def test_the_providers_event_is_parsed(self) -> None:
        event = parse_event(BODY)

        assert event.id == "evt_1"
        assert event.data.charge_id == "ch_1"
        assert str(event.data.amount) == "21.00"

    @pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"id":"evt_1"}'])
    def test_a_body_of_another_shape_is_malformed(self, body: bytes) -> None:
        with pytest.raises(MalformedWebhook):
            parse_event(body)
