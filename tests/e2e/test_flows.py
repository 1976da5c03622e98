"""User journeys through the gateway of the running system, with the real provider simulator,
SMTP sink, broker and databases: the order saga, exactly-once charging, revocation, deletion."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from servicekit.testing.waiting import wait_until_sync

from .support import System

PASSWORD = "correct horse battery staple 42"


@dataclass
class User:
    id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def api(system: System) -> httpx.Client:
    with httpx.Client(base_url=system.gateway, timeout=10) as client:
        yield client


@pytest.fixture
def simulator(system: System) -> httpx.Client:
    with httpx.Client(base_url=f"http://127.0.0.1:{system.ports['SIMULATOR']}") as client:
        yield client
        client.put("/__admin/faults", json={"error_rate": 0, "latency_ms": 0, "down": False})


def register(api: httpx.Client, name: str = "Ada", *, email: str | None = None) -> User:
    email = email or f"e2e.{uuid.uuid4().hex[:12]}@example.com"
    created = api.post("/auth/register", json={"email": email, "password": PASSWORD, "name": name})
    assert created.status_code == 201, created.text
    tokens = api.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    user = User(created.json()["id"], email, body["access_token"], body["refresh_token"])
    wait_until_sync(lambda: api.get("/users/me", headers=user.auth).status_code == 200, timeout=5)
    return user


def place_order(
    api: httpx.Client, user: User, *, token: str = "tok_visa", key: str | None = None, **extra: Any
) -> httpx.Response:
    body = {
        "items": [{"sku": "E2E-1", "quantity": 2, "unit_price": "10.50"}],
        "currency": "USD",
        "payment_token": token,
        **extra,
    }
    headers = {**user.auth, "Idempotency-Key": key or str(uuid.uuid4())}
    return api.post("/orders", json=body, headers=headers)


def order_status(api: httpx.Client, user: User, order_id: str) -> str:
    return str(api.get(f"/orders/{order_id}", headers=user.auth).json().get("status"))


def wait_status(
    api: httpx.Client, user: User, order_id: str, status: str, timeout: float = 10
) -> None:
    wait_until_sync(
        lambda: order_status(api, user, order_id) == status,
        timeout=timeout,
        what=f"order {order_id} to be {status}",
    )


def ledger_for(simulator: httpx.Client, order_id: str) -> list[dict[str, Any]]:
    charges = [e for e in simulator.get("/__admin/ledger").json() if e["type"] == "charge"]
    mine = [e for e in charges if e.get("metadata", {}).get("order_id") == order_id]
    refunds = [
        e
        for e in simulator.get("/__admin/ledger").json()
        if e["type"] == "refund" and e.get("charge_id") in {c["id"] for c in mine}
    ]
    return mine + refunds


class TestOrderSaga:
    def test_happy_path_confirmed_within_a_second_one_charge_two_emails(
        self, api: httpx.Client, simulator: httpx.Client, system: System
    ) -> None:
        user = register(api, "Grace")
        created = place_order(api, user)
        assert created.status_code == 201, created.text
        order = created.json()
        assert order["status"] == "pending"
        assert order["total_amount"] == "21.00"
        started = time.monotonic()
        wait_status(api, user, order["id"], "confirmed", timeout=5)
        assert time.monotonic() - started < 1.0  # SYSTEM.md: confirmed within a second

        entries = ledger_for(simulator, order["id"])
        assert [(e["type"], e["amount"]) for e in entries] == [("charge", "21.00")]
        payments = api.get(f"/payments?order_id={order['id']}", headers=user.auth).json()
        assert [p["status"] for p in payments["items"]] == ["succeeded"]

        def two_notifications() -> list[dict[str, Any]]:
            items = api.get("/notifications", headers=user.auth).json()["items"]
            return items if len(items) >= 2 and all(i["status"] == "sent" for i in items) else []

        notifications = wait_until_sync(two_notifications, timeout=10, what="two notifications")
        assert notifications, api.get("/notifications", headers=user.auth).text
        assert {n["event_type"] for n in notifications} == {"user.registered", "order.confirmed"}
        sink = httpx.get(f"http://127.0.0.1:{system.ports['SMTP_SINK_HTTP']}/messages").json()
        mine = [m for m in sink if user.email in " ".join(m["rcpt_tos"])]
        assert len(mine) == 2

    def test_an_international_address_gets_its_mail(
        self, api: httpx.Client, system: System
    ) -> None:
        local = f"zoë.{uuid.uuid4().hex[:8]}"
        user = register(api, "Zoë", email=f"{local}@bücher.example")

        def sent() -> list[dict[str, Any]]:
            items = api.get("/notifications", headers=user.auth).json()["items"]
            return items if items and all(i["status"] == "sent" for i in items) else []

        wait_until_sync(sent, timeout=10, what="the notifications sent")
        sink = httpx.get(f"http://127.0.0.1:{system.ports['SMTP_SINK_HTTP']}/messages").json()
        mine = [m for m in sink if m["rcpt_tos"] == [f"{local}@xn--bcher-kva.example"]]
        assert [m["subject"] for m in mine] == ["Welcome, Zoë"]

    def test_decline_fails_the_order_with_the_reason_on_the_payment(
        self, api: httpx.Client, simulator: httpx.Client
    ) -> None:
        user = register(api)
        order = place_order(api, user, token="tok_decline_insufficient_funds").json()
        wait_status(api, user, order["id"], "failed")
        payment = api.get(f"/payments?order_id={order['id']}", headers=user.auth).json()["items"][0]
        assert payment["status"] == "failed"
        assert payment["reason"] == "declined"
        assert ledger_for(simulator, order["id"]) == []

    def test_idempotency_key_one_order_one_charge_different_body_conflicts(
        self, api: httpx.Client, simulator: httpx.Client
    ) -> None:
        user = register(api)
        key = str(uuid.uuid4())
        first = place_order(api, user, key=key)
        second = place_order(api, user, key=key)
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        other = place_order(api, user, key=key, currency="EUR")
        assert other.status_code == 409
        wait_status(api, user, first.json()["id"], "confirmed")
        orders = api.get("/orders", headers=user.auth).json()["items"]
        assert [o["id"] for o in orders] == [first.json()["id"]]
        assert len(ledger_for(simulator, first.json()["id"])) == 1

    def test_cancel_confirmed_is_refunded_once(
        self, api: httpx.Client, simulator: httpx.Client
    ) -> None:
        user = register(api)
        order = place_order(api, user).json()
        wait_status(api, user, order["id"], "confirmed")
        cancelled = api.post(f"/orders/{order['id']}/cancel", headers=user.auth)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "refund_pending"
        wait_status(api, user, order["id"], "refunded")
        entries = ledger_for(simulator, order["id"])
        assert sorted(e["type"] for e in entries) == ["charge", "refund"]
        again = api.post(f"/orders/{order['id']}/cancel", headers=user.auth)
        assert again.status_code == 409

    def test_a_payment_landing_after_a_cancel_is_refunded(
        self, api: httpx.Client, simulator: httpx.Client
    ) -> None:
        user = register(api)
        simulator.put("/__admin/faults", json={"down": True})
        order = place_order(api, user).json()
        time.sleep(0.5)
        cancelled = api.post(f"/orders/{order['id']}/cancel", headers=user.auth)
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        simulator.put("/__admin/faults", json={"down": False})

        def charged_and_refunded() -> bool:
            return sorted(e["type"] for e in ledger_for(simulator, order["id"])) == [
                "charge",
                "refund",
            ]

        wait_until_sync(
            charged_and_refunded, timeout=30, what="a charge and its refund in the ledger"
        )
        assert order_status(api, user, order["id"]) == "cancelled"

    def test_flaky_provider_every_order_confirmed_exactly_one_charge_each(
        self, api: httpx.Client, simulator: httpx.Client
    ) -> None:
        user = register(api)
        simulator.put("/__admin/faults", json={"error_rate": 0.3, "latency_ms": 300})
        ids = []
        for _ in range(100):
            response = place_order(api, user)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])

        def all_confirmed() -> bool:
            page = api.get("/orders?status=confirmed&limit=100", headers=user.auth).json()
            return len(page["items"]) == len(ids)

        wait_until_sync(all_confirmed, timeout=120, interval=1.0, what="all confirmed")
        simulator.put("/__admin/faults", json={"error_rate": 0, "latency_ms": 0})
        charges = [
            e
            for e in simulator.get("/__admin/ledger").json()
            if e["type"] == "charge" and e["metadata"].get("order_id") in set(ids)
        ]
        assert len(charges) == len(ids)
        assert len({c["metadata"]["order_id"] for c in charges}) == len(ids)


class TestRevocationAndDeletion:
    def test_after_logout_the_access_token_is_refused_by_users_and_orders_within_a_second(
        self, api: httpx.Client
    ) -> None:
        user = register(api)
        assert api.get("/orders", headers=user.auth).status_code == 200
        out = api.post(
            "/auth/logout", json={"refresh_token": user.refresh_token}, headers=user.auth
        )
        assert out.status_code == 204
        started = time.monotonic()

        def refused_everywhere() -> bool:
            return (
                api.get("/users/me", headers=user.auth).status_code == 401
                and api.get("/orders", headers=user.auth).status_code == 401
            )

        wait_until_sync(refused_everywhere, timeout=3, interval=0.05, what="refused everywhere")
        assert time.monotonic() - started < 1.5

    def test_deleted_user_cannot_log_in_or_use_their_token(self, api: httpx.Client) -> None:
        user = register(api)
        assert api.delete("/users/me", headers=user.auth).status_code == 204

        def locked_out() -> bool:
            login = api.post("/auth/login", json={"email": user.email, "password": PASSWORD})
            return (
                login.status_code == 401
                and api.get("/orders", headers=user.auth).status_code == 401
                and api.get("/notifications", headers=user.auth).status_code == 401
            )

        wait_until_sync(locked_out, timeout=5, what="locked out")


class TestObjectLevelAuthorization:
    def test_another_users_resources_are_404_everywhere(self, api: httpx.Client) -> None:
        owner, intruder = register(api, "Owner"), register(api, "Intruder")
        order = place_order(api, owner).json()
        wait_status(api, owner, order["id"], "confirmed")
        payment = api.get(f"/payments?order_id={order['id']}", headers=owner.auth).json()["items"][
            0
        ]
        notifications = wait_until_sync(
            lambda: api.get("/notifications", headers=owner.auth).json()["items"], timeout=10
        )
        assert api.get(f"/users/{owner.id}", headers=intruder.auth).status_code == 404
        assert api.get(f"/orders/{order['id']}", headers=intruder.auth).status_code == 404
        assert api.post(f"/orders/{order['id']}/cancel", headers=intruder.auth).status_code == 404
        assert api.get(f"/payments/{payment['id']}", headers=intruder.auth).status_code == 404
        assert (
            api.get(f"/payments?order_id={order['id']}", headers=intruder.auth).json()["items"]
            == []
        )
        for notification in notifications:
            got = api.get(f"/notifications/{notification['id']}", headers=intruder.auth)
            assert got.status_code == 404
        assert api.get("/users", headers=intruder.auth).status_code == 403


class TestCorrelation:
    def test_one_correlation_id_in_the_logs_of_every_service_of_an_order(
        self, api: httpx.Client, system: System
    ) -> None:
        user = register(api)
        correlation = f"corr-{uuid.uuid4().hex}"
        response = api.post(
            "/orders",
            json={
                "items": [{"sku": "CORR-1", "quantity": 1, "unit_price": "5.00"}],
                "currency": "USD",
                "payment_token": "tok_visa",
            },
            headers={**user.auth, "X-Request-ID": correlation},
        )
        assert response.status_code == 201
        wait_status(api, user, response.json()["id"], "confirmed")

        def in_all_logs() -> bool:
            logs = {
                "orders": system.log("orders-1") + system.log("orders-2"),
                "payments": system.log("payments-gateway-1") + system.log("payments-gateway-2"),
                "notifications": system.log("notifications-1"),
            }
            return all(correlation in text for text in logs.values())

        wait_until_sync(in_all_logs, timeout=10, what="in all logs")


class TestScaledInstances:
    def test_patch_then_get_returns_the_new_value_at_once_across_two_users_instances(
        self, api: httpx.Client, system: System
    ) -> None:
        user = register(api, "Before")
        for round_ in range(10):
            name = f"After {round_}"
            patched = api.patch("/users/me", json={"name": name}, headers=user.auth)
            assert patched.status_code == 200, patched.text
            # Consecutive reads are balanced over both instances; each sees the write.
            for _ in range(4):
                assert api.get("/users/me", headers=user.auth).json()["name"] == name
        for instance in ("users-1", "users-2"):
            assert "PATCH" in system.log(instance) or "/users/me" in system.log(instance)

    async def test_two_hundred_orders_over_two_instances_each_charged_exactly_once(
        self, system: System, simulator: httpx.Client
    ) -> None:
        async with httpx.AsyncClient(base_url=system.gateway, timeout=30) as client:
            users = []
            for _ in range(4):
                users.append(
                    await asyncio.to_thread(
                        register, httpx.Client(base_url=system.gateway, timeout=10), "Load"
                    )
                )

            async def order(user: User) -> str:
                response = await client.post(
                    "/orders",
                    json={
                        "items": [{"sku": "LOAD-1", "quantity": 1, "unit_price": "3.30"}],
                        "currency": "USD",
                        "payment_token": "tok_visa",
                    },
                    headers={**user.auth, "Idempotency-Key": str(uuid.uuid4())},
                )
                assert response.status_code == 201, response.text
                return str(response.json()["id"])

            semaphore = asyncio.Semaphore(16)

            async def bounded(user: User) -> str:
                async with semaphore:
                    return await order(user)

            ids = await asyncio.gather(*(bounded(users[i % 4]) for i in range(200)))

            async def confirmed() -> int:
                total = 0
                for user in users:
                    page = await client.get("/orders?status=confirmed&limit=100", headers=user.auth)
                    total += len(page.json()["items"])
                return total

            deadline = time.monotonic() + 120
            while await confirmed() < len(ids) and time.monotonic() < deadline:
                await asyncio.sleep(1)
            assert await confirmed() == len(ids)
        charges = [
            e
            for e in simulator.get("/__admin/ledger").json()
            if e["type"] == "charge" and e["metadata"].get("order_id") in set(ids)
        ]
        assert len(charges) == len(ids)
        assert len({c["metadata"]["order_id"] for c in charges}) == len(ids)
        for instance in ("orders-1", "orders-2", "payments-gateway-1", "payments-gateway-2"):
            assert "event.handled" in system.log(instance), f"{instance} handled nothing"
