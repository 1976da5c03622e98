"""The running system under attack: two users, auth's signing key, the gateway."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2e.support import System

from servicekit.testing.forgery import Forger

from .helpers import User, register
from .running import shared_system


@pytest.fixture(scope="package")
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    yield from shared_system(request, tmp_path_factory, "security")


@pytest.fixture(scope="package")
def api(system: System) -> Iterator[httpx.Client]:
    """A client of the gateway, as any client on the internet would be."""
    with httpx.Client(base_url=system.gateway, timeout=15) as client:
        yield client


@pytest.fixture(scope="package")
def forger(system: System) -> Forger:
    """Signs tokens with auth's own key (from the launched system's key directory)."""
    return Forger.from_keys_dir(system.run_dir / "keys")


@pytest.fixture(scope="package")
def alice(api: httpx.Client) -> User:
    return register(api, "Alice")


@pytest.fixture(scope="package")
def bob(api: httpx.Client) -> User:
    return register(api, "Bob")
