"""The payment provider simulator, served by uvicorn and driven over loopback HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp

from svctools.simulator import SIGNATURE_HEADER, create_app, sign_webhook

SECRET = "whsec_test_secret"
ORDER_ID = "5b0c1f3e-8f43-4a53-9f77-6f0b7f1e2d10"
PAYMENT_ID = "0d7c8a90-2a55-4a0e-8a39-2f8d0f0c9b1e"

ServeApp = Callable[[ASGIApp], Awaitable[str]]


def charge_body(source: str = "tok_visa", amount: object = "21.00", **extra: Any) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "USD",
        "source": source,
        "metadata": {"order_id": ORDER_ID, "payment_id": PAYMENT_ID},
        **extra,
    }


async def charge(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/charges", json=body, headers={"Idempotency-Key": key})


async def refund(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/refunds", json=body, headers={"Idempotency-Key": key})


async def ledger(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/__admin/ledger")
    assert response.status_code == 200
    entries: list[dict[str, Any]] = response.json()
    return entries


async def set_faults(client: httpx.AsyncClient, **faults: Any) -> dict[str, Any]:
    response = await client.put("/__admin/faults", json=faults)
    assert response.status_code == 200, response.text
    current: dict[str, Any] = response.json()
    return current


def new_key() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def provider(serve_app: ServeApp) -> AsyncIterator[httpx.AsyncClient]:
    base_url = await serve_app(create_app(webhook_url=None, webhook_secret=SECRET))
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield client


@dataclass
class Delivery:
    headers: httpx.Headers
    body: bytes

    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(self.body)
        return event


@dataclass
class WebhookReceiver:
    """A real HTTP endpoint standing in for the payments service's webhook route."""

    failures_before_success: int = 0
    deliveries: list[Delivery] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/payments/webhooks/provider")
        async def receive(request: Request) -> Response:
            self.deliveries.append(Delivery(httpx.Headers(request.headers), await request.body()))
            if len(self.deliveries) <= self.failures_before_success:
                return Response(status_code=500)
            return Response(status_code=204)

        return app

    async def wait_for(self, count: int) -> list[Delivery]:
        async with asyncio.timeout(10):
            while len(self.deliveries) < count:
                await asyncio.sleep(0.01)
        return self.deliveries


def assert_signed(delivery: Delivery) -> None:
    header = delivery.headers[SIGNATURE_HEADER]
    timestamp = int(dict(part.split("=", 1) for part in header.split(","))["t"])
    assert abs(time.time() - timestamp) < 60
    assert hmac.compare_digest(header, sign_webhook(SECRET, timestamp, delivery.body))


class TestCharges:
    async def test_a_good_card_is_charged_and_recorded(self, provider: httpx.AsyncClient) -> None:
        key = new_key()

        response = await charge(provider, key, charge_body())

        assert response.status_code == 201
        created = response.json()
        assert created["id"].startswith("ch_")
        assert created["status"] == "succeeded"
        assert created["amount"] == "21.00"
        assert created["currency"] == "USD"
        assert created["metadata"] == {"order_id": ORDER_ID, "payment_id": PAYMENT_ID}
        assert created["created_at"].endswith("Z")
        [entry] = await ledger(provider)
        assert entry == {
            "id": created["id"],
            "type": "charge",
            "idempotency_key": key,
            "amount": "21.00",
            "currency": "USD",
            "status": "succeeded",
            "charge_id": None,
            "metadata": {"order_id": ORDER_ID, "payment_id": PAYMENT_ID},
            "created_at": created["created_at"],
        }
        fetched = await provider.get(f"/v1/charges/{created['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == created

    async def test_amount_is_normalised_to_two_places(self, provider: httpx.AsyncClient) -> None:
        response = await charge(provider, new_key(), charge_body(amount="7.5"))

        assert response.status_code == 201
        assert response.json()["amount"] == "7.50"

    async def test_a_declined_card_moves_no_money(self, provider: httpx.AsyncClient) -> None:
        response = await charge(provider, new_key(), charge_body(source="tok_decline_insufficient"))

        assert response.status_code == 402
        declined = response.json()
        assert declined["id"].startswith("ch_")
        assert declined["status"] == "declined"
        assert declined["decline_code"] == "card_declined"
        assert await ledger(provider) == []

    @pytest.mark.parametrize(
        "body",
        [
            charge_body(amount=21.0),
            charge_body(amount=21),
            charge_body(amount="0.00"),
            charge_body(amount="-5.00"),
            charge_body(amount="1.234"),
            charge_body(amount="1e3"),
            charge_body(amount="twenty"),
            {**charge_body(), "currency": "usd"},
            {**charge_body(), "currency": "EURO"},
            {"amount": "21.00", "currency": "USD"},
        ],
        ids=[
            "float",
            "integer",
            "zero",
            "negative",
            "three-places",
            "exponent",
            "words",
            "lower-case-currency",
            "long-currency",
            "no-source",
        ],
    )
    async def test_invalid_input_is_refused_with_422(
        self, provider: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await charge(provider, new_key(), body)

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"
        assert await ledger(provider) == []

    async def test_malformed_json_is_refused_with_400(self, provider: httpx.AsyncClient) -> None:
        response = await provider.post(
            "/v1/charges",
            content=b'{"amount": ',
            headers={"Idempotency-Key": new_key(), "Content-Type": "application/json"},
        )

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_body"

    async def test_an_idempotency_key_is_required(self, provider: httpx.AsyncClient) -> None:
        response = await provider.post("/v1/charges", json=charge_body())

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "idempotency_key_missing"
        assert await ledger(provider) == []

    async def test_an_unknown_charge_is_404(self, provider: httpx.AsyncClient) -> None:
        response = await provider.get("/v1/charges/ch_does_not_exist")

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "charge_not_found"


class TestIdempotency:
    async def test_a_replay_returns_the_first_response_and_charges_once(
        self, provider: httpx.AsyncClient
    ) -> None:
        key = new_key()
        first = await charge(provider, key, charge_body())

        replay = await charge(provider, key, charge_body())

        assert replay.status_code == first.status_code == 201
        assert replay.json() == first.json()
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert len(await ledger(provider)) == 1

    async def test_a_replayed_decline_is_the_same_decline(
        self, provider: httpx.AsyncClient
    ) -> None:
        key = new_key()
        first = await charge(provider, key, charge_body(source="tok_decline"))

        replay = await charge(provider, key, charge_body(source="tok_decline"))

        assert replay.status_code == first.status_code == 402
        assert replay.json() == first.json()

    async def test_the_same_key_with_another_body_is_a_conflict(
        self, provider: httpx.AsyncClient
    ) -> None:
        key = new_key()
        await charge(provider, key, charge_body(amount="21.00"))

        response = await charge(provider, key, charge_body(amount="99.00"))

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert [entry["amount"] for entry in await ledger(provider)] == ["21.00"]

    async def test_concurrent_requests_with_one_key_charge_once(
        self, provider: httpx.AsyncClient
    ) -> None:
        # The latency keeps the first request in flight while the others arrive.
        await set_faults(provider, latency_ms=300)
        key = new_key()

        responses = await asyncio.gather(*(charge(provider, key, charge_body()) for _ in range(20)))

        assert {response.status_code for response in responses} == {201}
        assert len({response.json()["id"] for response in responses}) == 1
        entries = await ledger(provider)
        assert len(entries) == 1
        assert entries[0]["idempotency_key"] == key

    async def test_a_client_that_timed_out_is_charged_once_and_its_retry_replays(
        self, provider: httpx.AsyncClient
    ) -> None:
        await set_faults(provider, latency_ms=500)
        key = new_key()

        with pytest.raises(httpx.ReadTimeout):
            await provider.post(
                "/v1/charges", json=charge_body(), headers={"Idempotency-Key": key}, timeout=0.1
            )
        retry = await charge(provider, key, charge_body())

        assert retry.status_code == 201
        assert retry.headers["Idempotent-Replayed"] == "true"
        [entry] = await ledger(provider)
        assert entry["id"] == retry.json()["id"]

    async def test_distinct_keys_make_distinct_charges(self, provider: httpx.AsyncClient) -> None:
        await asyncio.gather(*(charge(provider, new_key(), charge_body()) for _ in range(5)))

        assert len(await ledger(provider)) == 5


class TestRefunds:
    async def test_a_refund_without_amount_refunds_the_whole_charge(
        self, provider: httpx.AsyncClient
    ) -> None:
        charged = (await charge(provider, new_key(), charge_body(amount="21.00"))).json()
        key = new_key()

        response = await refund(provider, key, {"charge_id": charged["id"]})

        assert response.status_code == 201
        refunded = response.json()
        assert refunded["id"].startswith("re_")
        assert refunded["status"] == "succeeded"
        assert refunded["charge_id"] == charged["id"]
        assert refunded["amount"] == "21.00"
        entries = await ledger(provider)
        assert [entry["type"] for entry in entries] == ["charge", "refund"]
        assert entries[1] | {"created_at": None, "metadata": None} == {
            "id": refunded["id"],
            "type": "refund",
            "idempotency_key": key,
            "amount": "21.00",
            "currency": "USD",
            "status": "succeeded",
            "charge_id": charged["id"],
            "metadata": None,
            "created_at": None,
        }
        fetched = (await provider.get(f"/v1/charges/{charged['id']}")).json()
        assert fetched["amount_refunded"] == "21.00"

    async def test_refunds_may_not_exceed_the_charge(self, provider: httpx.AsyncClient) -> None:
        charged = (await charge(provider, new_key(), charge_body(amount="21.00"))).json()
        partial = await refund(provider, new_key(), {"charge_id": charged["id"], "amount": "15.00"})

        over = await refund(provider, new_key(), {"charge_id": charged["id"], "amount": "6.01"})

        assert partial.status_code == 201
        assert over.status_code == 409
        assert over.json()["error"]["code"] == "refund_exceeds_charge"
        rest = await refund(provider, new_key(), {"charge_id": charged["id"]})
        assert rest.json()["amount"] == "6.00"
        refunds = [entry["amount"] for entry in await ledger(provider) if entry["type"] == "refund"]
        assert refunds == ["15.00", "6.00"]

    async def test_refunding_an_unknown_charge_is_404(self, provider: httpx.AsyncClient) -> None:
        response = await refund(provider, new_key(), {"charge_id": "ch_unknown"})

        assert response.status_code == 404
        assert await ledger(provider) == []

    async def test_a_declined_charge_cannot_be_refunded(self, provider: httpx.AsyncClient) -> None:
        declined = (await charge(provider, new_key(), charge_body(source="tok_decline"))).json()

        response = await refund(provider, new_key(), {"charge_id": declined["id"]})

        assert response.status_code == 409
        assert await ledger(provider) == []

    async def test_a_replayed_refund_refunds_once(self, provider: httpx.AsyncClient) -> None:
        charged = (await charge(provider, new_key(), charge_body())).json()
        key = new_key()
        body = {"charge_id": charged["id"], "amount": "5.00"}
        first = await refund(provider, key, body)

        replay = await refund(provider, key, body)

        assert replay.status_code == 201
        assert replay.json() == first.json()
        assert sum(entry["type"] == "refund" for entry in await ledger(provider)) == 1

    async def test_keys_are_scoped_per_endpoint(self, provider: httpx.AsyncClient) -> None:
        key = new_key()
        charged = (await charge(provider, key, charge_body())).json()

        response = await refund(provider, key, {"charge_id": charged["id"]})

        assert response.status_code == 201


class TestFaults:
    async def test_faults_start_cleared_and_update_partially(
        self, provider: httpx.AsyncClient
    ) -> None:
        initial = (await provider.get("/__admin/faults")).json()
        await set_faults(provider, latency_ms=250)
        await set_faults(provider, error_rate=0.5)

        current = (await provider.get("/__admin/faults")).json()

        assert initial == {"error_rate": 0.0, "latency_ms": 0, "down": False}
        assert current == {"error_rate": 0.5, "latency_ms": 250, "down": False}

    @pytest.mark.parametrize(
        "faults", [{"error_rate": 1.5}, {"latency_ms": -1}, {"down": "sometimes"}]
    )
    async def test_nonsense_faults_are_refused(
        self, provider: httpx.AsyncClient, faults: dict[str, Any]
    ) -> None:
        response = await provider.put("/__admin/faults", json=faults)

        assert response.status_code == 422

    async def test_a_down_provider_answers_503_and_charges_nothing(
        self, provider: httpx.AsyncClient
    ) -> None:
        await set_faults(provider, down=True, latency_ms=2000)
        key = new_key()

        started = time.monotonic()
        response = await charge(provider, key, charge_body())
        elapsed = time.monotonic() - started

        assert response.status_code == 503
        assert elapsed < 1.5
        assert await ledger(provider) == []
        await set_faults(provider, down=False, latency_ms=0, error_rate=0)
        recovered = await charge(provider, key, charge_body())
        assert recovered.status_code == 201
        assert "Idempotent-Replayed" not in recovered.headers

    async def test_an_error_rate_of_one_fails_every_request_before_any_effect(
        self, provider: httpx.AsyncClient
    ) -> None:
        await set_faults(provider, error_rate=1.0)
        key = new_key()

        responses = [await charge(provider, key, charge_body()) for _ in range(60)]

        assert {response.status_code for response in responses} <= {500, 503}
        retry_afters = {response.headers.get("Retry-After") for response in responses}
        assert "1" in retry_afters
        assert await ledger(provider) == []
        await set_faults(provider, error_rate=0)
        recovered = await charge(provider, key, charge_body())
        assert recovered.status_code == 201
        assert "Idempotent-Replayed" not in recovered.headers

    async def test_latency_delays_provider_answers_only(self, provider: httpx.AsyncClient) -> None:
        await set_faults(provider, latency_ms=400)

        started = time.monotonic()
        charged = await charge(provider, new_key(), charge_body())
        charge_time = time.monotonic() - started
        started = time.monotonic()
        await provider.get(f"/v1/charges/{charged.json()['id']}")
        lookup_time = time.monotonic() - started
        started = time.monotonic()
        await provider.get("/__admin/ledger")
        admin_time = time.monotonic() - started

        assert charged.status_code == 201
        assert charge_time >= 0.4
        assert lookup_time >= 0.4
        assert admin_time < 0.4

    async def test_reset_forgets_everything(self, provider: httpx.AsyncClient) -> None:
        key = new_key()
        first = (await charge(provider, key, charge_body())).json()
        await set_faults(provider, latency_ms=100, error_rate=0.2)

        response = await provider.post("/__admin/reset")

        assert response.status_code == 204
        assert await ledger(provider) == []
        assert (await provider.get("/__admin/faults")).json() == {
            "error_rate": 0.0,
            "latency_ms": 0,
            "down": False,
        }
        assert (await provider.get("/__admin/stats")).json()["requests"] == {}
        again = await charge(provider, key, charge_body())
        assert again.status_code == 201
        assert again.json()["id"] != first["id"]


class TestStats:
    async def test_requests_are_counted_per_route_including_faulted_ones(
        self, provider: httpx.AsyncClient
    ) -> None:
        charged = (await charge(provider, new_key(), charge_body())).json()
        await provider.get(f"/v1/charges/{charged['id']}")
        await refund(provider, new_key(), {"charge_id": charged["id"]})
        await set_faults(provider, down=True)
        for _ in range(3):
            await charge(provider, new_key(), charge_body())

        stats = (await provider.get("/__admin/stats")).json()

        assert stats["requests"] == {
            "/v1/charges": 4,
            "/v1/charges/{charge_id}": 1,
            "/v1/refunds": 1,
        }
        assert stats["faulted"] == 3


class TestPendingCharges:
    async def start(self, serve_app: ServeApp, receiver: WebhookReceiver) -> httpx.AsyncClient:
        receiver_url = await serve_app(receiver.app())
        app = create_app(
            webhook_url=f"{receiver_url}/payments/webhooks/provider",
            webhook_secret=SECRET,
            pending_delay=0.1,
            webhook_backoff=0.05,
        )
        return httpx.AsyncClient(base_url=await serve_app(app), timeout=10)

    async def test_a_pending_charge_completes_by_signed_webhook(self, serve_app: ServeApp) -> None:
        receiver = WebhookReceiver()
        async with await self.start(serve_app, receiver) as provider:
            key = new_key()

            response = await charge(provider, key, charge_body(source="tok_pending"))
            pending_entries = await ledger(provider)
            [delivery] = await receiver.wait_for(1)

            assert response.status_code == 202
            assert response.json()["status"] == "pending"
            assert [entry["status"] for entry in pending_entries] == ["pending"]
            assert_signed(delivery)
            event = delivery.event()
            assert event["id"].startswith("evt_")
            assert event["type"] == "charge.succeeded"
            assert isinstance(event["created"], int)
            assert event["data"] == {
                "charge_id": response.json()["id"],
                "status": "succeeded",
                "amount": "21.00",
                "currency": "USD",
                "idempotency_key": key,
                "metadata": {"order_id": ORDER_ID, "payment_id": PAYMENT_ID},
            }
            assert [entry["status"] for entry in await ledger(provider)] == ["succeeded"]
            fetched = await provider.get(f"/v1/charges/{response.json()['id']}")
            assert fetched.json()["status"] == "succeeded"

    async def test_a_pending_failure_is_announced_as_failed(self, serve_app: ServeApp) -> None:
        receiver = WebhookReceiver()
        async with await self.start(serve_app, receiver) as provider:
            response = await charge(provider, new_key(), charge_body(source="tok_pending_fail"))
            [delivery] = await receiver.wait_for(1)

            assert response.status_code == 202
            assert_signed(delivery)
            assert delivery.event()["type"] == "charge.failed"
            assert delivery.event()["data"]["status"] == "failed"
            assert [entry["status"] for entry in await ledger(provider)] == ["failed"]

    async def test_the_webhook_is_retried_until_the_receiver_accepts_it(
        self, serve_app: ServeApp
    ) -> None:
        receiver = WebhookReceiver(failures_before_success=2)
        async with await self.start(serve_app, receiver) as provider:
            await charge(provider, new_key(), charge_body(source="tok_pending"))
            deliveries = await receiver.wait_for(3)
            await asyncio.sleep(0.3)

            assert len(receiver.deliveries) == 3
            assert len({delivery.event()["id"] for delivery in deliveries}) == 1
            for delivery in deliveries:
                assert_signed(delivery)
            stats = (await provider.get("/__admin/stats")).json()
            assert stats["webhooks"] == {"attempts": 3, "delivered": 1, "abandoned": 0}


class TestSignWebhook:
    def test_the_signature_is_hmac_sha256_over_timestamp_dot_body(self) -> None:
        body = b'{"id":"evt_1"}'
        digest = hmac.new(b"whsec_x", b"1700000000." + body, hashlib.sha256).hexdigest()

        assert sign_webhook("whsec_x", 1700000000, body) == f"t=1700000000,v1={digest}"

    def test_any_change_changes_the_signature(self) -> None:
        body = b'{"id":"evt_1"}'
        reference = sign_webhook("whsec_x", 1700000000, body)

        assert sign_webhook("whsec_y", 1700000000, body) != reference
        assert sign_webhook("whsec_x", 1700000001, body) != reference
        assert sign_webhook("whsec_x", 1700000000, body + b" ") != reference


class TestCommandLine:
    async def test_python_dash_m_serves_on_the_configured_port_until_sigterm(
        self, free_port: Callable[[], int]
    ) -> None:
        port = free_port()
        env = os.environ | {
            "SIMULATOR_HOST": "127.0.0.1",
            "SIMULATOR_PORT": str(port),
            "SIMULATOR_WEBHOOK_URL": "",
            "SIMULATOR_LOG_LEVEL": "warning",
        }
        process = subprocess.Popen([sys.executable, "-m", "svctools.simulator"], env=env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                async with asyncio.timeout(20):
                    while True:
                        try:
                            health = await client.get("/healthz")
                            break
                        except httpx.TransportError:
                            await asyncio.sleep(0.1)
                charged = await charge(client, new_key(), charge_body())

            assert health.status_code == 200
            assert charged.status_code == 201
        finally:
            process.send_signal(signal.SIGTERM)
            return_code = await asyncio.to_thread(process.wait, 20)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert return_code in {0, -signal.SIGTERM}
