"""What each service's `/metrics` says after a customer used the system: real counts, not just
declared families."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servicekit.testing.waiting import wait_until_sync

from .support import SERVICES, System

PASSWORD = "metrics passphrase 1234"

Labels = dict[str, str]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float


def scrape(system: System, service: str) -> list[Sample]:
    """Every sample of every instance of ``service``, from its own port."""
    samples = []
    for instance in range(1, system.instances.get(service, 1) + 1):
        response = httpx.get(f"{system.service_url(service, instance)}/metrics", timeout=5)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        for family in text_string_to_metric_families(response.text):
            samples += [Sample(s.name, dict(s.labels), s.value) for s in family.samples]
    return samples


def matching(samples: Iterable[Sample], name: str, **labels: str) -> list[Sample]:
    return [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum over instances (and any label not given) of a sample."""
    return sum(s.value for s in matching(samples, name, **labels))


@pytest.fixture(scope="module")
def used(system: System) -> dict[str, list[Sample]]:
    """Register, fail a login, log in, read the profile twice, order and wait for confirmation;
    then fail logins for another email until auth throttles them."""
    email = f"metrics.{uuid.uuid4().hex[:12]}@example.com"
    with httpx.Client(base_url=system.gateway, timeout=10) as api:
        created = api.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "Metrics"}
        )
        assert created.status_code == 201, created.text
        wrong = api.post("/auth/login", json={"email": email, "password": PASSWORD + " nope"})
        assert wrong.status_code == 401, wrong.text
        login = api.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        wait_until_sync(lambda: api.get("/users/me", headers=auth).status_code == 200, timeout=5)
        assert api.get("/users/me", headers=auth).status_code == 200
        assert api.get("/users/me", headers=auth).status_code == 200
        order = api.post(
            "/orders",
            json={
                "items": [{"sku": "METRICS-1", "quantity": 3, "unit_price": "4.00"}],
                "currency": "USD",
                "payment_token": "tok_visa",
            },
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert order.status_code == 201, order.text

        def confirmed() -> bool:
            got = api.get(f"/orders/{order.json()['id']}", headers=auth)
            return bool(got.json().get("status") == "confirmed")

        wait_until_sync(confirmed, what="the order to be confirmed")

    throttle_until_refused(system)

    def payment_results_counted() -> bool:
        orders = scrape(system, "orders")
        return total(orders, "events_consumed_total", event_type="payment.succeeded") >= 1

    # The consumer counts after its ack, a moment after the state the API shows.
    wait_until_sync(payment_results_counted, timeout=5, what="payment results counted")
    return {service: scrape(system, service) for service in SERVICES}


def throttle_until_refused(system: System, attempts: int = 30) -> None:
    """Fail logins for one email until auth answers 429, as the gateway forwards them for a
    client of its own (a documentation address no other test uses)."""
    email = f"throttled.{uuid.uuid4().hex[:12]}@example.com"
    client = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
    with httpx.Client(base_url=system.service_url("auth"), timeout=10) as auth:
        for _ in range(attempts):
            response = auth.post(
                "/auth/login",
                json={"email": email, "password": "wrong passphrase, every time"},
                headers={"X-Real-IP": client},
            )
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) > 0
                return
            assert response.status_code == 401, response.text
    raise AssertionError(f"no 429 after {attempts} failed logins for one email")


class TestHttp:
    def test_post_orders_is_counted_under_its_route_template(
        self, used: dict[str, list[Sample]]
    ) -> None:
        orders = used["orders"]
        assert (
            total(
                orders,
                "http_requests_total",
                service="orders",
                method="POST",
                route="/orders",
                status="201",
            )
            > 0
        )
        assert (
            total(
                orders,
                "http_request_duration_seconds_count",
                method="POST",
                route="/orders",
            )
            > 0
        )
        # GET /orders/{order_id} is one route, whatever ids were asked for.
        routes = {s.labels["route"] for s in matching(orders, "http_requests_total")}
        assert "/orders/{order_id}" in routes, routes
        assert not any(uuid_like(route) for route in routes), routes


def uuid_like(route: str) -> bool:
    for part in route.split("/"):
        try:
            uuid.UUID(part)
        except ValueError:
            continue
        return True
    return False


class TestEvents:
    def test_order_created_published_by_orders_and_consumed_by_payments(
        self, used: dict[str, list[Sample]]
    ) -> None:
        assert (
            total(
                used["orders"],
                "events_published_total",
                service="orders",
                event_type="order.created",
            )
            >= 1
        )
        payments = used["payments-gateway"]
        assert (
            total(
                payments,
                "events_consumed_total",
                service="payments-gateway",
                event_type="order.created",
                outcome="handled",
            )
            >= 1
        )
        assert (
            total(
                payments,
                "event_handler_duration_seconds_count",
                event_type="order.created",
            )
            > 0
        )
        assert total(payments, "event_handler_duration_seconds_sum", event_type="order.created") > 0

    def test_payment_result_consumed_by_orders(self, used: dict[str, list[Sample]]) -> None:
        assert (
            total(
                used["orders"],
                "events_consumed_total",
                event_type="payment.succeeded",
                outcome="handled",
            )
            >= 1
        )

    @pytest.mark.parametrize("service", list(SERVICES))
    def test_outbox_backlog_is_exported(self, used: dict[str, list[Sample]], service: str) -> None:
        pending = matching(used[service], "outbox_pending_events", service=service)
        oldest = matching(used[service], "outbox_oldest_pending_age_seconds", service=service)
        assert len(pending) == len(oldest) == used_instances(used, service), pending
        assert all(s.value >= 0 for s in pending + oldest)

    @pytest.mark.parametrize("service", list(SERVICES))
    def test_failure_counters_exist_at_zero_before_anything_failed(
        self, used: dict[str, list[Sample]], service: str
    ) -> None:
        # Every service consumes the revocation events, which nothing in these suites makes
        # fail, yet their series are there, so a rate() or an alert has data from the start.
        for name in ("events_retried_total", "events_dead_lettered_total"):
            series = [
                s
                for s in matching(used[service], name, service=service)
                if s.labels["queue"].endswith(".revocations")
            ]
            types = {s.labels["event_type"] for s in series}
            assert {"session.revoked", "user.deleted"} <= types, (name, types)
            assert all(s.value == 0 for s in series), series


def used_instances(used: dict[str, list[Sample]], service: str) -> int:
    """How many instances answered (each reports its own outbox gauges)."""
    return len(matching(used[service], "consumers_active", service=service))


class TestBreakerCacheThrottle:
    def test_the_provider_circuit_is_exported_closed(self, used: dict[str, list[Sample]]) -> None:
        states = matching(
            used["payments-gateway"],
            "circuit_breaker_state",
            service="payments-gateway",
            breaker="payment-provider",
        )
        assert len(states) == used_instances(used, "payments-gateway")
        assert all(s.value == 0 for s in states)

    def test_a_second_profile_read_is_a_cache_hit(self, used: dict[str, list[Sample]]) -> None:
        users = used["users"]
        assert (
            total(users, "cache_requests_total", service="users", cache="user", result="hit") >= 1
        )
        results = {s.labels["result"] for s in matching(users, "cache_requests_total")}
        assert results == {"hit", "miss", "error"}
        # Redis is up the whole time: no read fell back to the database.
        assert total(users, "cache_requests_total", service="users", result="error") == 0

    def test_a_throttled_login_is_counted_and_both_scopes_are_exported(
        self, used: dict[str, list[Sample]]
    ) -> None:
        throttled = matching(used["auth"], "auth_login_throttled_total", service="auth")
        assert {s.labels["scope"] for s in throttled} == {"email", "address"}
        assert total(throttled, "auth_login_throttled_total", scope="email") >= 1
