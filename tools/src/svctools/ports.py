"""Free ports for a whole system started beside others: the tests, the chaos run and the bench.

The launcher lays a system's ports out as a block: one per name, consecutive from a base, and
instance k of a service on its first port + 100·k. ``pick_block`` finds a base where every one
of them can be bound now.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping, Sequence

from svctools.launcher import SERVICES

# The kernel hands out client ports from here up: a block above it could lose a port to any
# outgoing connection on the machine between the check and the service's bind.
EPHEMERAL_START = 32768
INSTANCE_STRIDE = 100
# The launcher's ports, as ``<NAME>_PORT`` in its environment: a whole system's block.
SYSTEM_PORT_NAMES = (
    "GATEWAY",
    *(definition.env_prefix.rstrip("_") for definition in SERVICES),
    "SIMULATOR",
    "SMTP_SINK",
    "SMTP_SINK_HTTP",
)


def is_free(port: int) -> bool:
    """Whether ``port`` can be bound on every address right now (the gateway listens on all)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def every_port(ports: Mapping[str, int], instances: Mapping[str, int] | None = None) -> list[int]:
    """Each name's port and those of its further instances (``instances[name]`` in all)."""
    counts = instances or {}
    return [
        port + INSTANCE_STRIDE * k
        for name, port in ports.items()
        for k in range(counts.get(name, 1))
    ]


def pick_block(
    names: Sequence[str],
    *,
    instances: Mapping[str, int] | None = None,
    low: int = 20000,
    high: int = 32000,
) -> dict[str, int]:
    """``{name: port}``, consecutive from a random base in [low, high), all of them free.

    Callers that run at the same time keep to ranges of their own (the end-to-end tests and the
    chaos run 20000–32000, the bench 10000–19800), below ``EPHEMERAL_START``.
    """
    most = max([1, *(instances or {}).values()])
    if high + len(names) + INSTANCE_STRIDE * (most - 1) > EPHEMERAL_START:
        raise ValueError(f"ports up to {high} with {most} instances reach the ephemeral range")
    chooser = random.SystemRandom()
    for _ in range(200):
        base = chooser.randrange(low, high, 20)
        ports = {name: base + offset for offset, name in enumerate(names)}
        if all(is_free(port) for port in every_port(ports, instances)):
            return ports
    raise RuntimeError(f"no free block of {len(names)} ports in {low}–{high}")
