"""Fuzzing every service's HTTP API from its own OpenAPI document, on the running system.

Each service is called on its own port (its OpenAPI is the contract; the gateway's 413/429 are
not part of it) with real access tokens: signed with auth's key from the system's key directory
for a registered user, a fresh one per request, so a fuzzed logout or session revocation does
not lock the rest of the run out. Each request also comes from a client address of its own
(X-Real-IP, which auth believes from 127.0.0.1 as it does from the gateway), so thousands of
fuzzed failed logins do not throttle the address every other test logs in from.

`FUZZ_EXAMPLES` sets the examples per operation and phase: a few in `make test`, many in
`make fuzz`; `FUZZ_SEED` replays a run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from e2e.conftest import System
from schemathesis import AuthContext, Case
from schemathesis.schemas import BaseSchema
from security.helpers import User, register
from security.running import shared_system

from servicekit.testing.forgery import Forger

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))

# Gateway prefix -> the launcher's service name.
SERVICES = {
    "auth": "auth",
    "users": "users",
    "orders": "orders",
    "payments": "payments-gateway",
    "notifications": "notifications",
}

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
]


@dataclass
class ServiceResult:
    """What one service's run did, for the summary at the end of the session."""

    requests: dict[str, int] = field(default_factory=dict)
    linked_steps: int = 0
    failures: int = 0
    seconds: float = 0.0
    stop_reason: str = ""


RESULTS: dict[str, ServiceResult] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A table of the requests each phase made per service."""
    if not RESULTS:
        return
    phases = ["examples", "coverage", "fuzzing", "stateful"]
    terminalreporter.section(f"fuzzing ({EXAMPLES} examples per operation and phase)")
    header = f"{'service':<14}" + "".join(f"{p:>18}" for p in phases)
    terminalreporter.write_line(header + f"{'linked steps':>14}{'failures':>10}{'seconds':>9}")
    for prefix, result in RESULTS.items():
        counts = "".join(f"{result.requests.get(p, 0):>18}" for p in phases)
        terminalreporter.write_line(
            f"{prefix:<14}{counts}{result.linked_steps:>14}{result.failures:>10}"
            f"{result.seconds:>9.1f}"
        )


def fuzz_config() -> schemathesis.Config:
    """Positive and negative data, the checks above and no example database on disk."""
    settings: dict[str, Any] = {
        "suppress-health-check": ["all"],
        "request-timeout": 30,
        "workers": 1,
        "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    }
    if os.environ.get("FUZZ_SEED"):
        settings["seed"] = int(os.environ["FUZZ_SEED"])
    return schemathesis.Config.from_dict(settings)


@pytest.fixture(scope="package")
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    yield from shared_system(request, tmp_path_factory, "fuzz")


@pytest.fixture(scope="package")
def gateway(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.gateway, timeout=15) as client:
        yield client


@pytest.fixture(scope="package")
def forger(system: System) -> Forger:
    return Forger.from_keys_dir(system.run_dir / "keys")


@pytest.fixture(scope="package")
def fuzz_user(gateway: httpx.Client) -> User:
    return register(gateway, "Fuzz")


def _client_address() -> str:
    # 198.18.0.0/15 is for benchmarking; each case is a different client of the login throttle.
    number = uuid.uuid4().int
    return f"198.18.{number % 256}.{1 + (number >> 8) % 254}"


def auth_provider(forger: Forger, user: User, gateway: httpx.Client) -> type[Any]:
    """A schemathesis auth provider: a fresh token per request, of the right kind of user."""

    class FreshToken:
        def get(self, case: Case[Any], context: AuthContext) -> str:
            label = context.operation.label
            if label == "GET /users":
                return forger.valid(user.id, roles=["user", "admin"])
            if label == "DELETE /users/me":
                # Deleting the fuzz user would end the run: each deletion gets a user of its own.
                return forger.valid(register(gateway, "Doomed").id)
            return forger.valid(user.id)

        def set(self, case: Case[Any], data: str, context: AuthContext) -> None:
            case.headers["Authorization"] = f"Bearer {data}"
            case.headers["X-Real-IP"] = _client_address()

    return FreshToken


@pytest.fixture(params=list(SERVICES))
def prefix(request: pytest.FixtureRequest) -> str:
    """The service's gateway prefix (its paths start with it)."""
    value: str = request.param
    return value


@pytest.fixture
def service_schema(
    prefix: str, system: System, forger: Forger, fuzz_user: User, gateway: httpx.Client
) -> BaseSchema:
    base = system.service_url(SERVICES[prefix])
    schema = schemathesis.openapi.from_url(f"{base}/{prefix}/openapi.json", config=fuzz_config())
    schema.auth(refresh_interval=None)(auth_provider(forger, fuzz_user, gateway))
    return schema
