"""Small helpers shared by the auth tests."""

from __future__ import annotations

import random
import statistics
import uuid

# Meets the policy and is in no list: tests that are not about passwords use it.
GOOD_PASSWORD = "violet-harbour-lantern-42"


def new_email() -> str:
    """An email no other test (or run) uses."""
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def new_address() -> str:
    """A client address no other test is likely to use (for the per-address throttle)."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def p95(samples: list[float]) -> float:
    """The 95th percentile."""
    return statistics.quantiles(samples, n=20)[-1]
