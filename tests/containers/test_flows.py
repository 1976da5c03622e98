"""Through the containerized gateway: the contract smoke check and the order saga."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from support import REPO_ROOT, System

from servicekit.testing.waiting import wait_until_sync

ORDER = {
    "items": [{"sku": "CONTAINER-1", "quantity": 2, "unit_price": "10.50"}],
    "currency": "USD",
    "payment_token": "tok_visa",
}
# The contract's own smoke check, kept beside the repository (SMOKE_SCRIPT to point elsewhere).
SMOKE_SCRIPT = Path(
    os.environ.get("SMOKE_SCRIPT", REPO_ROOT.parent / "shared" / "contract_smoke.py")
)


def place_order(system: System, client: httpx.Client) -> dict[str, str]:
    headers = {**system.auth_headers(), "Idempotency-Key": str(uuid.uuid4())}
    response = client.post("/orders", json=ORDER, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_contract_smoke_passes_through_the_gateway(system: System) -> None:
    if not SMOKE_SCRIPT.exists():
        pytest.skip(f"no contract smoke script at {SMOKE_SCRIPT}")
    env = {**os.environ, "SMOKE_SIMULATOR": system.simulator, "SMOKE_SERVICE_HEALTH": "off"}
    result = subprocess.run(
        [sys.executable, str(SMOKE_SCRIPT), system.gateway],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout


def test_order_saga_confirms_charges_once_and_mails(system: System) -> None:
    with system.client() as client:
        order = place_order(system, client)
        assert order["status"] == "pending"

        def confirmed() -> bool:
            got = client.get(f"/orders/{order['id']}", headers=system.auth_headers())
            return got.status_code == 200 and got.json()["status"] == "confirmed"

        wait_until_sync(confirmed, timeout=60, what="the order to be confirmed")
    assert len(system.charges_for(order["id"])) == 1

    def mailed() -> list[dict[str, object]]:
        messages = httpx.get(f"{system.mail}/messages", timeout=10).json()
        return [
            message
            for message in messages
            if system.user["email"] in str(message)
            and order["id"].replace("-", "")[:8].upper() in str(message["subject"])
        ]

    wait_until_sync(mailed, timeout=60, what="the confirmation email")
