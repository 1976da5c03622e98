"""The whole system from its images under docker compose, driven through the real docker CLI.

Run by `make test-containers` (which provides the engine), never by `make test`. One compose
project per session, on loopback ports chosen here, removed with its volumes at the end.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import SCALE, SERVICES, UP_TIMEOUT, System, free_port, register


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SHOP_CONTAINER_TESTS") == "1":
        return
    # The hook sees the whole session's items, not only this directory's: mark ours alone.
    skip = pytest.mark.skip(reason="needs a container engine: run by make test-containers")
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def system() -> Iterator[System]:
    project = f"shop-test-{uuid.uuid4().hex[:8]}"
    ports = {
        "SHOP_TEST_GATEWAY_PORT": free_port(),
        "SHOP_TEST_SIMULATOR_PORT": free_port(),
        "SHOP_TEST_MAIL_PORT": free_port(),
    }
    env = {**os.environ, **{name: str(port) for name, port in ports.items()}}
    running = System(
        project=project,
        env=env,
        gateway=f"http://127.0.0.1:{ports['SHOP_TEST_GATEWAY_PORT']}",
        simulator=f"http://127.0.0.1:{ports['SHOP_TEST_SIMULATOR_PORT']}",
        mail=f"http://127.0.0.1:{ports['SHOP_TEST_MAIL_PORT']}",
        started_at=time.time(),
    )
    # The stand-ins for registry images; the project's images are built by make images.
    # One at a time: the engine's BuildKit (Docker 20.10) can lose a shared context's
    # snapshot when several targets of one Dockerfile build at once.
    for service in ("postgres", "redis", "rabbitmq", "gateway"):
        running.compose("build", service, timeout=1200)
    running.started_at = time.time()
    scale = [arg for name, count in SCALE.items() for arg in ("--scale", f"{name}={count}")]
    try:
        # Without a terminal compose reports each step as a plain line, in the order it took.
        running.cold_start_progress = running.compose_progress(
            "up", "-d", "--wait", *scale, *SERVICES, timeout=UP_TIMEOUT
        )
        running.user = register(running)
        yield running
    finally:
        if os.environ.get("SHOP_TEST_KEEP_LOGS"):
            Path(os.environ["SHOP_TEST_KEEP_LOGS"]).write_text(
                running.compose("logs", "--no-color", check=False)
            )
        running.compose("down", "-v", "--remove-orphans", "-t", "10", check=False)
