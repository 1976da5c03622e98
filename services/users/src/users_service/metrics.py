"""Prometheus counters of the profile cache (exported once the service serves /metrics)."""

from __future__ import annotations

from typing import Any, Literal

from prometheus_client import Counter

from servicekit.metrics import CACHE_REQUESTS

Lookup = Literal["hit", "miss", "bypass"]

CACHE_LOOKUPS = Counter(
    "users_cache_lookups_total",
    "Profile reads by where they were answered: hit (Redis), miss, or bypass (Redis unusable).",
    ["result"],
)
CACHE_FILLS = Counter(
    "users_cache_fills_total",
    "Attempts to store a profile read from the database: stored, or refused because the "
    "profile was invalidated while it was being read.",
    ["outcome"],
)
CACHE_DEGRADED = Counter(
    "users_cache_degraded_total",
    "Redis operations skipped or failed (error, or circuit open); the database answered instead.",
    ["operation", "reason"],
)
PROFILE_DB_READS = Counter(
    "users_profile_db_reads_total",
    "Profiles read from PostgreSQL on behalf of the cache (one per miss, not per request).",
)

# The same lookups in the family every service's cache reports (cache_requests_total): a bypass
# is a lookup Redis could not answer, an error there.
_SHARED_RESULTS: dict[str, str] = {"hit": "hit", "miss": "miss", "bypass": "error"}
_SERVICE, _CACHE = "users", "user"


def expose_cache_metrics() -> None:
    """Export every lookup result from the start, so a dashboard shows zeros, not gaps."""
    for result, shared in _SHARED_RESULTS.items():
        CACHE_LOOKUPS.labels(result)
        CACHE_REQUESTS.labels(_SERVICE, _CACHE, shared)


def count_lookup(result: Lookup) -> None:
    """Count one profile read by where it was answered, in both families."""
    series = _lookup_series.get(result)
    if series is None:
        series = _lookup_series[result] = (
            CACHE_LOOKUPS.labels(result),
            CACHE_REQUESTS.labels(_SERVICE, _CACHE, _SHARED_RESULTS[result]),
        )
    series[0].inc()
    series[1].inc()


# Every read counts itself: the three pairs of series are looked up once, not per read.
_lookup_series: dict[str, tuple[Any, Any]] = {}
