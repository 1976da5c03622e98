"""What the running system writes to its logs for one customer session: the order's lines can be
followed by one correlation id and one trace id, and no secret is ever written out."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.testing.waiting import wait_until_sync

from .support import System

FLOW_SERVICES = {
    "orders": "orders-",
    "payments-gateway": "payments-gateway-",
    "notifications": "notifications-",
}
# The consumer that handles each step of the order, by service.
FLOW_STEPS = {
    "payments-gateway": "order.created",
    "orders": "payment.succeeded",
    "notifications": "order.confirmed",
}


@dataclass(frozen=True)
class Session:
    """One customer's session, with every secret it involved."""

    order_id: str
    correlation_id: str
    secrets: dict[str, str]


def log_files(system: System) -> list[Path]:
    return sorted(p for p in (system.run_dir / "logs").iterdir() if p.is_file())


def json_lines(system: System, prefix: str) -> list[dict[str, Any]]:
    """Every JSON object logged by the instances whose log file starts with ``prefix``."""
    lines = []
    for path in log_files(system):
        if not path.name.startswith(prefix):
            continue
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return lines


def flow_lines(system: System, correlation_id: str) -> dict[str, list[dict[str, Any]]]:
    return {
        service: [line for line in json_lines(system, prefix) if correlation_id in str(line)]
        for service, prefix in FLOW_SERVICES.items()
    }


def handled(lines: list[dict[str, Any]], event_type: str) -> bool:
    return any(
        line.get("event") == "event.handled" and line.get("event_type") == event_type
        for line in lines
    )


@pytest.fixture(scope="module")
def session(system: System) -> Session:
    """Register, fail a login, log in (JSON and OAuth2 form), refresh, order, log out."""
    password = f"secret passphrase {uuid.uuid4().hex}"
    wrong_password = f"not the passphrase {uuid.uuid4().hex}"
    email = f"logs.{uuid.uuid4().hex[:12]}@example.com"
    correlation_id = f"logs-{uuid.uuid4().hex}"
    idempotency_key = str(uuid.uuid4())
    with httpx.Client(base_url=system.gateway, timeout=10) as api:
        created = api.post(
            "/auth/register", json={"email": email, "password": password, "name": "Logs"}
        )
        assert created.status_code == 201, created.text
        failed = api.post("/auth/login", json={"email": email, "password": wrong_password})
        assert failed.status_code == 401, failed.text
        login = api.post("/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        first_refresh = login.json()["refresh_token"]
        form = api.post(
            "/auth/token",
            data={"grant_type": "password", "username": email, "password": password},
        )
        assert form.status_code == 200, form.text
        refreshed = api.post("/auth/refresh", json={"refresh_token": first_refresh})
        assert refreshed.status_code == 200, refreshed.text
        tokens = refreshed.json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        wait_until_sync(lambda: api.get("/users/me", headers=auth).status_code == 200, timeout=5)

        order = api.post(
            "/orders",
            json={
                "items": [{"sku": "LOGS-1", "quantity": 1, "unit_price": "7.25"}],
                "currency": "USD",
                "payment_token": "tok_visa",
            },
            headers={
                **auth,
                "Idempotency-Key": idempotency_key,
                "X-Request-ID": correlation_id,
            },
        )
        assert order.status_code == 201, order.text
        order_id = order.json()["id"]

        def emailed() -> bool:
            items = api.get("/notifications", headers=auth).json()["items"]
            return any(
                i["event_type"] == "order.confirmed" and i["status"] == "sent" for i in items
            )

        wait_until_sync(emailed, what="the emails sent")
        out = api.post(
            "/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=auth
        )
        assert out.status_code == 204, out.text

    def complete() -> bool:
        lines = flow_lines(system, correlation_id)
        return all(handled(lines[service], step) for service, step in FLOW_STEPS.items())

    wait_until_sync(complete, what="the order's consumers to log their work")
    secrets = {
        "password": password,
        "wrong password": wrong_password,
        "access token": login.json()["access_token"],
        "access token signature": login.json()["access_token"].rsplit(".", 1)[1],
        "refreshed access token": tokens["access_token"],
        "refresh token": first_refresh,
        "token endpoint access token": form.json()["access_token"],
        "token endpoint refresh token": form.json()["refresh_token"],
        "rotated refresh token": tokens["refresh_token"],
        "payment token": "tok_visa",
    }
    return Session(order_id, correlation_id, secrets)


class TestSecrets:
    def test_no_password_token_or_card_token_in_any_log(
        self, system: System, session: Session
    ) -> None:
        leaks = []
        for path in log_files(system):
            text = path.read_text(errors="replace")
            for name, secret in session.secrets.items():
                if secret in text:
                    line = next(line for line in text.splitlines() if secret in line)
                    leaks.append(f"{name} in {path.name}: {line[:300]}")
        assert not leaks, "\n".join(leaks)

    def test_the_logs_were_searched(self, system: System, session: Session) -> None:
        names = {p.name for p in log_files(system)}
        assert {"auth-1.log", "orders-1.log", "payments-gateway-1.log"} <= names, names
        assert any(session.order_id in p.read_text(errors="replace") for p in log_files(system))


class TestCorrelation:
    def test_the_orders_lines_carry_one_correlation_id_and_one_trace_id(
        self, system: System, session: Session
    ) -> None:
        lines = flow_lines(system, session.correlation_id)
        for service, step in FLOW_STEPS.items():
            assert handled(lines[service], step), f"{service}: {lines[service]}"
        every = [line for service_lines in lines.values() for line in service_lines]
        assert {line.get("correlation_id") for line in every} == {session.correlation_id}
        trace_ids = {line.get("trace_id") for line in every}
        assert len(trace_ids) == 1, trace_ids
        (trace_id,) = trace_ids
        assert isinstance(trace_id, str)
        assert len(trace_id) == 32
        assert int(trace_id, 16) != 0

    def test_every_line_about_the_order_carries_its_correlation_id(
        self, system: System, session: Session
    ) -> None:
        about = [
            line
            for prefix in FLOW_SERVICES.values()
            for line in json_lines(system, prefix)
            if line.get("order_id") == session.order_id
        ]
        assert about
        strays = [line for line in about if line.get("correlation_id") != session.correlation_id]
        assert not strays, strays
