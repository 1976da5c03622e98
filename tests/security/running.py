"""The running system of the security and fuzz suites, shared when they run back to back.

Both suites need the whole system (`make run` on ports and names of its own); starting it takes
most of a minute on a small machine. When the two packages run one right after the other
(``pytest tests/fuzz tests/security``) the first starts it and the second stops it; otherwise
each package starts and stops its own, so no other suite ever runs beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.support import System, cleanup, leftovers, start_system, stop_system

SHARING_PACKAGES = ("fuzz", "security")
FIXTURE = "system"

# Failed logins each client address may make per window in this system (the default is 100):
# low enough for the brute-force test to reach it in a few seconds.
ADDRESS_MAX_FAILURES = 25
EMAIL_MAX_FAILURES = 10

_running: System | None = None


def _environment() -> dict[str, str]:
    return {
        "LOG_JSON": "true",
        # Every test client is 127.0.0.1: the per-client rate limit is raised but stays on.
        "GATEWAY_RATE_PER_SECOND": "300",
        "GATEWAY_BURST": "300",
        "AUTH_LOGIN_EMAIL_MAX_FAILURES": str(EMAIL_MAX_FAILURES),
        "AUTH_LOGIN_ADDRESS_MAX_FAILURES": str(ADDRESS_MAX_FAILURES),
    }


def _package_of(item: pytest.Item) -> str | None:
    """``fuzz`` or ``security`` for a test of those packages, else None."""
    try:
        parts = Path(item.path).relative_to(item.config.rootpath).parts
    except ValueError:
        return None
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in SHARING_PACKAGES:
        return parts[1]
    return None


def _needed_next(request: pytest.FixtureRequest, package: str) -> bool:
    """Whether the test right after this package's last one is the other package's and uses
    the system (only then does it keep running: no other suite runs beside it)."""
    items = request.session.items
    last = max((i for i, item in enumerate(items) if _package_of(item) == package), default=-1)
    if last < 0 or last + 1 >= len(items):
        return False
    following = items[last + 1]
    return _package_of(following) not in (None, package) and FIXTURE in getattr(
        following, "fixturenames", ()
    )


def _stop_if_still_running() -> None:
    """At the end of the session, whatever happened (-x, Ctrl-C): nothing is left running."""
    global _running
    if _running is not None:
        running, _running = _running, None
        stop_system(running)
        cleanup(running)


def shared_system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, package: str
) -> Iterator[System]:
    """Yield the running system; stop it (checked for leftovers) unless the other package's
    tests come next."""
    global _running
    if _running is None:
        tmp = tmp_path_factory.mktemp("system")
        _running = start_system(tmp, instances={}, extra_env=_environment())
        request.config.add_cleanup(_stop_if_still_running)
    running = _running
    yield running
    if _needed_next(request, package):
        return
    _running = None
    code = stop_system(running)
    ports, procs = leftovers(running)
    cleanup(running)
    assert code == 0, f"launcher exit code {code}"
    assert not ports, f"ports still listening: {ports}"
    assert not procs, f"processes still alive: {procs}"
