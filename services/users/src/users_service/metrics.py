"""Prometheus counters of the profile cache (exported once the service serves /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

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
