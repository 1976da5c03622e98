"""Start the whole system the way `make run` does, on ports and names of its own.

It runs beside a developer's `make run`: its own ports, databases suffixed with a namespace,
its own exchange and queues, its own run directory. Afterwards it checks that nothing it
started is still alive or listening, and drops what it created.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import System, cleanup, leftovers, start_system, stop_system


@pytest.fixture(scope="package")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Two instances of users, orders and payments-gateway; checked for leftovers after.

    The per-client rate limit is raised (every test client is 127.0.0.1) but stays on.
    """
    tmp = tmp_path_factory.mktemp("system")
    running = start_system(
        tmp,
        instances={"users": 2, "orders": 2, "payments-gateway": 2},
        extra_env={"LOG_JSON": "true", "GATEWAY_RATE_PER_SECOND": "300", "GATEWAY_BURST": "300"},
    )
    try:
        yield running
    finally:
        code = stop_system(running)
        ports, procs = leftovers(running)
        cleanup(running)
        assert code == 0, f"launcher exit code {code}"
        assert not ports, f"ports still listening: {ports}"
        assert not procs, f"processes still alive: {procs}"
