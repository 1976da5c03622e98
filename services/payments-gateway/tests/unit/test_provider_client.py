"""The provider client: which answers are retried, Retry-After, idempotency keys, the breaker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from payments_gateway.provider import (
    ChargeDeclined,
    ChargeRequest,
    ProviderClient,
    ProviderRejected,
    ProviderUnavailable,
    parse_retry_after,
)
from servicekit.breaker import CircuitOpenError, State

Responder = Callable[[httpx.Request], httpx.Response]


class FakeProvider:
    """Answers from a script, one entry per request, and remembers every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def charge_created(charge_id: str = "ch_1") -> httpx.Response:
    return httpx.Response(201, json={"id": charge_id, "status": "succeeded"})


def make_client(
    provider: FakeProvider,
    sleeps: list[float],
    *,
    clock: Clock | None = None,
    max_attempts: int = 3,
    failure_threshold: int = 5,
    retry_after_max: float = 5.0,
) -> ProviderClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    http = httpx.AsyncClient(transport=httpx.MockTransport(provider), base_url="http://provider")
    return ProviderClient(
        http,
        max_attempts=max_attempts,
        backoff_initial=0.01,
        backoff_max=0.05,
        retry_after_max=retry_after_max,
        failure_threshold=failure_threshold,
        reset_timeout=30.0,
        sleep=sleep,
        clock=clock or Clock(),
    )


def a_charge() -> ChargeRequest:
    return ChargeRequest(
        payment_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        amount=Decimal("21.00"),
        currency="USD",
        source="tok_visa",
    )


class TestProviderRetries:
    async def test_5xx_is_retried_with_the_same_key_and_body_until_it_succeeds(self) -> None:
        provider = FakeProvider(
            httpx.Response(500, json={"error": {"code": "internal_error"}}),
            httpx.Response(503),
            charge_created("ch_ok"),
        )
        sleeps: list[float] = []
        request = a_charge()

        result = await make_client(provider, sleeps).charge(request)

        assert result.charge_id == "ch_ok"
        assert result.status == "succeeded"
        assert len(provider.requests) == 3
        keys = {r.headers["Idempotency-Key"] for r in provider.requests}
        assert keys == {str(request.payment_id)}
        assert len({r.content for r in provider.requests}) == 1
        body = provider.requests[0].read()
        assert b'"amount":"21.00"' in body.replace(b" ", b"")
        assert len(sleeps) == 2

    @pytest.mark.parametrize(
        "failure",
        [
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("hung up"),
        ],
    )
    async def test_transport_errors_are_retried(self, failure: Exception) -> None:
        provider = FakeProvider(failure, charge_created())
        sleeps: list[float] = []

        result = await make_client(provider, sleeps).charge(a_charge())

        assert result.charge_id == "ch_1"
        assert len(provider.requests) == 2

    async def test_429_is_retried(self) -> None:
        provider = FakeProvider(httpx.Response(429), charge_created())

        await make_client(provider, []).charge(a_charge())

        assert len(provider.requests) == 2

    async def test_a_decline_is_not_retried(self) -> None:
        provider = FakeProvider(
            httpx.Response(
                402, json={"id": "ch_d", "status": "declined", "decline_code": "card_declined"}
            )
        )

        with pytest.raises(ChargeDeclined) as declined:
            await make_client(provider, []).charge(a_charge())

        assert declined.value.decline_code == "card_declined"
        assert len(provider.requests) == 1

    @pytest.mark.parametrize("status", [400, 404, 409, 422])
    async def test_other_4xx_answers_are_not_retried(self, status: int) -> None:
        provider = FakeProvider(httpx.Response(status, json={"error": {"code": "nope"}}))

        with pytest.raises(ProviderRejected) as rejected:
            await make_client(provider, []).charge(a_charge())

        assert rejected.value.status_code == status
        assert rejected.value.code == "nope"
        assert len(provider.requests) == 1

    async def test_the_attempt_budget_is_bounded(self) -> None:
        provider = FakeProvider(httpx.Response(503))
        sleeps: list[float] = []

        with pytest.raises(ProviderUnavailable):
            await make_client(provider, sleeps, max_attempts=4).charge(a_charge())

        assert len(provider.requests) == 4
        assert len(sleeps) == 3
        assert all(0 < s <= 0.05 for s in sleeps)

    async def test_a_pending_charge_is_reported_as_pending(self) -> None:
        provider = FakeProvider(httpx.Response(202, json={"id": "ch_p", "status": "pending"}))

        result = await make_client(provider, []).charge(a_charge())

        assert (result.charge_id, result.status) == ("ch_p", "pending")

    async def test_a_refund_uses_its_own_key_derived_from_the_payment(self) -> None:
        provider = FakeProvider(httpx.Response(503), httpx.Response(201, json={"id": "re_1"}))
        payment_id = uuid.uuid4()

        result = await make_client(provider, []).refund(
            payment_id=payment_id, order_id=uuid.uuid4(), charge_id="ch_1", amount=Decimal("5")
        )

        assert result.refund_id == "re_1"
        assert [r.url.path for r in provider.requests] == ["/v1/refunds"] * 2
        keys = {r.headers["Idempotency-Key"] for r in provider.requests}
        assert keys == {f"refund-{payment_id}"}


class TestRetryAfter:
    async def test_the_wait_is_at_least_retry_after(self) -> None:
        provider = FakeProvider(httpx.Response(503, headers={"Retry-After": "2"}), charge_created())
        sleeps: list[float] = []

        await make_client(provider, sleeps).charge(a_charge())

        assert len(sleeps) == 1
        assert sleeps[0] >= 2.0

    async def test_a_retry_after_longer_than_allowed_ends_the_call_and_is_reported(
        self,
    ) -> None:
        provider = FakeProvider(httpx.Response(429, headers={"Retry-After": "120"}))
        sleeps: list[float] = []

        with pytest.raises(ProviderUnavailable) as unavailable:
            await make_client(provider, sleeps, retry_after_max=5).charge(a_charge())

        assert len(provider.requests) == 1
        assert sleeps == []
        assert unavailable.value.retry_after == 120

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("3", 3.0), ("0", 0.0), ("-4", 0.0), ("soon", None), (None, None), ("nan", None)],
    )
    def test_delta_seconds_are_parsed(self, header: str | None, expected: float | None) -> None:
        assert parse_retry_after(header) == expected

    def test_an_http_date_is_parsed(self) -> None:
        from datetime import UTC, datetime

        now = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)

        seconds = parse_retry_after("Thu, 26 Nov 2026 10:00:30 GMT", now=now)

        assert seconds == 30.0


class TestBreakerAroundTheRetriedCall:
    async def test_an_exhausted_call_counts_as_one_failure_not_one_per_attempt(self) -> None:
        provider = FakeProvider(httpx.Response(503))
        client = make_client(provider, [], max_attempts=3, failure_threshold=2)

        with pytest.raises(ProviderUnavailable):
            await client.charge(a_charge())

        assert len(provider.requests) == 3
        assert client.breaker.failure_count == 1
        assert client.circuit_state is State.CLOSED

        with pytest.raises(ProviderUnavailable):
            await client.charge(a_charge())

        assert client.circuit_state is State.OPEN

    async def test_an_open_circuit_refuses_calls_without_reaching_the_provider(self) -> None:
        provider = FakeProvider(httpx.Response(503))
        clock = Clock()
        client = make_client(provider, [], max_attempts=2, failure_threshold=1, clock=clock)
        with pytest.raises(ProviderUnavailable):
            await client.charge(a_charge())
        sent = len(provider.requests)

        with pytest.raises(CircuitOpenError) as refused:
            await client.charge(a_charge())

        assert len(provider.requests) == sent
        assert 0 < refused.value.retry_after <= 30

        clock.now += 31
        provider.answers = [charge_created()]
        await client.charge(a_charge())
        assert client.circuit_state is State.CLOSED

    async def test_declines_and_rejections_do_not_trip_the_breaker(self) -> None:
        provider = FakeProvider(
            httpx.Response(402, json={"status": "declined"}),
            httpx.Response(402, json={"status": "declined"}),
            httpx.Response(409, json={"error": {"code": "idempotency_key_reused"}}),
            httpx.Response(402, json={"status": "declined"}),
        )
        client = make_client(provider, [], failure_threshold=1)

        for _ in range(4):
            with pytest.raises((ChargeDeclined, ProviderRejected)):
                await client.charge(a_charge())

        assert client.circuit_state is State.CLOSED
        assert client.breaker.failure_count == 0

    async def test_a_success_resets_the_failure_count(self) -> None:
        provider = FakeProvider(httpx.Response(503))
        client = make_client(provider, [], max_attempts=1, failure_threshold=2)
        with pytest.raises(ProviderUnavailable):
            await client.charge(a_charge())
        provider.answers = [charge_created()]

        await client.charge(a_charge())

        assert client.breaker.failure_count == 0
