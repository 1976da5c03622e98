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

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from e2e.support import System
from schemathesis.schemas import BaseSchema
from security.helpers import User, register
from security.running import shared_system

from servicekit.testing.forgery import Forger

from .support import EXAMPLES, RESULTS, SERVICES, auth_provider, fuzz_config


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
