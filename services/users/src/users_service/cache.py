"""Read-through Redis cache of profiles: one database read per miss, no stale refills.

Keys (the ``{<id>}`` hash tag keeps a user's keys in one Redis Cluster slot, so the scripts
below may touch them together):

- ``users:user:{<id>}`` — the profile's read model (``UserRead`` JSON), TTL ``cache_ttl_seconds``
  plus up to 10 % jitter;
- ``users:user:{<id>}:gen`` — the generation: a random token replaced by every invalidation
  (TTL one hour, far longer than any read can take);
- ``users:user:{<id>}:lock`` — the fill lock (``SET NX PX``) one instance holds while it reads
  the database for a miss; the others poll the value key meanwhile.

Why the generation: a reader that missed, read the database and only then stores its row could
overwrite a newer invalidation with the old row. Readers note the generation before reading the
database and the fill script stores the row only if the generation is unchanged, atomically. A
random token, unlike a counter, cannot come back to an old value after the key expired.

Within one process, concurrent misses of a key share one load (a task per key and generation);
across processes the lock makes the others wait briefly and re-read Redis. Every Redis failure
(error, timeout, open circuit) is logged and counted, and the database answers instead: Redis
being down costs latency, never a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError
from redis.exceptions import RedisError

from servicekit.breaker import CircuitBreaker, CircuitOpenError
from servicekit.logging import get_logger
from servicekit.metrics import breaker_observer
from servicekit.redisclient import RedisClient
from users_service.metrics import (
    CACHE_DEGRADED,
    CACHE_FILLS,
    PROFILE_DB_READS,
    count_lookup,
    expose_cache_metrics,
)
from users_service.schemas import UserRead

log = get_logger(__name__)

T = TypeVar("T")
Loader = Callable[[uuid.UUID], Awaitable[UserRead | None]]
FillHook = Callable[[uuid.UUID], Awaitable[None]]

KEY_PREFIX = "users:user:"
BREAKER_NAME = "users-cache"
GENERATION_TTL_MS = 3_600_000
# A load whose generation is unknown because Redis could not be asked.
_UNKNOWN_GENERATION = "\x00unknown"
_RETRY_INVALIDATION_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

# KEYS: value, lock. ARGV: lock token, lock ms.
# Returns the cached value if there is one now, else 1 when the lock was taken, 0 when it is held.
_ACQUIRE = """
local value = redis.call('GET', KEYS[1])
if value then return value end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: value, generation, lock. ARGV: generation seen before the database read ('' = none),
# value ('' = nothing to store), ttl ms, lock token ('' = not holding it).
# Stores the value only if no invalidation happened since; releases our lock. Returns 1 if stored.
_FILL = """
local stored = 0
local generation = redis.call('GET', KEYS[2]) or ''
if ARGV[2] ~= '' and generation == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  stored = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return stored
"""

# KEYS: value, generation. ARGV: new generation, its ttl ms. A new generation (so fills that
# read the database before now are refused), then the value goes.
_INVALIDATE = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class CachedProfile:
    """A profile's read model and its JSON: what Redis holds, byte for byte what clients get.

    A hit answers with the bytes Redis returned (validated, not re-serialized): rendering the
    model again cost about a twentieth of a cached read.
    """

    user: UserRead
    json: bytes

    @classmethod
    def of(cls, user: UserRead) -> CachedProfile:
        """Render a read model."""
        return cls(user, user.model_dump_json().encode())


class _RedisUnusableError(Exception):
    """Redis could not be used for this operation; fall back to the database."""


@dataclass(frozen=True)
class CacheKeys:
    """The Redis keys of one user's cached profile."""

    value: str
    generation: str
    lock: str

    @classmethod
    def of(cls, user_id: uuid.UUID) -> CacheKeys:
        base = f"{KEY_PREFIX}{{{user_id}}}"
        return cls(value=base, generation=f"{base}:gen", lock=f"{base}:lock")


class UserCache:
    """Profiles by id: Redis, else one database load per key, stored unless invalidated since."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        ttl_seconds: int = 300,
        lock_ms: int = 2000,
        wait_ms: int = 1000,
        poll_ms: int = 15,
        breaker: CircuitBreaker | None = None,
        remembered_entries: int = 10_000,
    ) -> None:
        self.redis = redis
        self.ttl_ms = ttl_seconds * 1000
        self.lock_ms = lock_ms
        self.wait_seconds = wait_ms / 1000
        self.poll_seconds = poll_ms / 1000
        # A hanging Redis would cost every request its socket timeout; after a few failures
        # the breaker skips Redis for a while and probes it again later.
        self.breaker = breaker or CircuitBreaker(
            BREAKER_NAME,
            failure_threshold=3,
            reset_timeout=5,
            on_state_change=breaker_observer("users", BREAKER_NAME),
        )
        # A seam for tests that need a slow fill: awaited between the database read and the fill.
        self.before_fill: FillHook | None = None
        self._acquire = redis.register_script(_ACQUIRE)
        self._fill = redis.register_script(_FILL)
        self._invalidate = redis.register_script(_INVALIDATE)
        self._flights: dict[tuple[uuid.UUID, str], asyncio.Task[CachedProfile | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Entries already validated, by their exact bytes: a hot profile comes back from Redis
        # identical on every read, and validating the same bytes again gives the same answer.
        self.remembered_entries = remembered_entries
        self._validated: dict[bytes, CachedProfile] = {}
        expose_cache_metrics()

    async def get(self, user_id: uuid.UUID, load: Loader) -> CachedProfile | None:
        """The profile from Redis, else from ``load`` (shared by concurrent misses), then cached."""
        keys = CacheKeys.of(user_id)
        try:
            cached, generation = await self._call(
                "read", lambda: self.redis.mget(keys.value, keys.generation)
            )
        except _RedisUnusableError:
            count_lookup("bypass")
            return await self._single_flight(user_id, _UNKNOWN_GENERATION, load, join_any=True)
        if cached is not None:
            profile = await self._parse(keys, cached)
            if profile is not None:
                count_lookup("hit")
                return profile
        count_lookup("miss")
        seen = generation.decode() if isinstance(generation, bytes) else (generation or "")
        return await self._single_flight(user_id, seen, load)

    async def invalidate(self, user_ids: Iterable[uuid.UUID]) -> None:
        """Evict profiles whose rows changed; call only after the change committed."""
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return
        # Loads already running may have read the old row: later callers must not join them.
        for key in [key for key in self._flights if key[0] in ids]:
            del self._flights[key]
        try:
            await self._call("invalidate", lambda: self._evict(ids))
        except _RedisUnusableError:
            # A stale entry would outlive the outage: keep trying in the background (the TTL
            # bounds the damage if Redis stays away longer).
            self._spawn(self._retry_invalidation(ids))

    async def close(self) -> None:
        """Stop background work (pending invalidation retries, orphaned loads)."""
        tasks = [*self._background, *self._flights.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._flights.clear()

    # --- loading ---------------------------------------------------------------------------

    async def _single_flight(
        self, user_id: uuid.UUID, generation: str, load: Loader, *, join_any: bool = False
    ) -> CachedProfile | None:
        flight = (user_id, generation)
        task = self._flights.get(flight)
        if task is None and join_any:
            # Without Redis the generation is unknown, so any load of this user running here is
            # as fresh as a new one (invalidations made here have already removed older ones).
            task = next((t for (uid, _), t in self._flights.items() if uid == user_id), None)
        if task is None:
            task = asyncio.create_task(
                self._load(user_id, generation, load), name=f"users-cache-load:{user_id}"
            )
            self._flights[flight] = task
            task.add_done_callback(lambda done: self._landed(flight, done))
        # Shielded: a caller that goes away must not cancel the load the others wait for.
        return await asyncio.shield(task)

    def _landed(
        self, flight: tuple[uuid.UUID, str], task: asyncio.Task[CachedProfile | None]
    ) -> None:
        if self._flights.get(flight) is task:
            del self._flights[flight]
        if not task.cancelled():
            task.exception()  # retrieved here so an unobserved failure is not reported twice

    async def _load(
        self, user_id: uuid.UUID, generation: str, load: Loader
    ) -> CachedProfile | None:
        if generation == _UNKNOWN_GENERATION:
            return await self._read_database(user_id, load)
        keys = CacheKeys.of(user_id)
        token = uuid.uuid4().hex
        holds_lock = False
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                outcome = await self._call(
                    "lock",
                    lambda: self._acquire(keys=[keys.value, keys.lock], args=[token, self.lock_ms]),
                )
            except _RedisUnusableError:
                return await self._read_database(user_id, load)
            if isinstance(outcome, bytes | str):
                # Another instance filled it while we waited for its lock.
                cached = await self._parse(keys, outcome)
                if cached is not None:
                    return cached
                break
            if outcome == 1:
                holds_lock = True
                break
            if time.monotonic() >= deadline:
                log.info("cache.lock_wait_expired", user_id=str(user_id))
                break
            await asyncio.sleep(self.poll_seconds)
        profile = await self._read_database(user_id, load)
        if self.before_fill is not None:
            await self.before_fill(user_id)
        if profile is None and not holds_lock:
            return None
        payload = profile.json if profile is not None else b""
        ttl_ms = self.ttl_ms + random.randint(0, self.ttl_ms // 10)  # noqa: S311 - jitter only
        try:
            stored = await self._call(
                "fill",
                lambda: self._fill(
                    keys=[keys.value, keys.generation, keys.lock],
                    args=[generation, payload, ttl_ms, token if holds_lock else ""],
                ),
            )
        except _RedisUnusableError:
            return profile
        if profile is not None:
            CACHE_FILLS.labels("stored" if stored == 1 else "refused_stale").inc()
            if stored != 1:
                log.info("cache.stale_fill_refused", user_id=str(user_id))
        return profile

    async def _read_database(self, user_id: uuid.UUID, load: Loader) -> CachedProfile | None:
        PROFILE_DB_READS.inc()
        user = await load(user_id)
        return CachedProfile.of(user) if user is not None else None

    async def _parse(self, keys: CacheKeys, raw: bytes | str) -> CachedProfile | None:
        data = raw.encode() if isinstance(raw, str) else raw
        known = self._validated.get(data)
        if known is not None:
            return known
        try:
            profile = CachedProfile(UserRead.model_validate_json(data), data)
        except ValidationError:
            # Written by an incompatible version of this service: drop it and read afresh.
            log.warning("cache.unreadable_entry", key=keys.value)
            with contextlib.suppress(_RedisUnusableError):
                await self._call("evict", lambda: self.redis.delete(keys.value))
            return None
        if self.remembered_entries > 0:
            while len(self._validated) >= self.remembered_entries:
                del self._validated[next(iter(self._validated))]  # the oldest
            self._validated[data] = profile
        return profile

    # --- invalidation ----------------------------------------------------------------------

    async def _evict(self, ids: list[uuid.UUID]) -> None:
        # One script per user: a user's keys share a Cluster slot, different users need not.
        async def evict(user_id: uuid.UUID) -> None:
            keys = CacheKeys.of(user_id)
            await self._invalidate(
                keys=[keys.value, keys.generation], args=[uuid.uuid4().hex, GENERATION_TTL_MS]
            )

        await asyncio.gather(*(evict(user_id) for user_id in ids))

    async def _retry_invalidation(self, ids: list[uuid.UUID]) -> None:
        for delay in _RETRY_INVALIDATION_DELAYS:
            await asyncio.sleep(max(delay, self.breaker.retry_after))
            try:
                await self._call("invalidate", lambda: self._evict(ids))
            except _RedisUnusableError:
                continue
            log.info("cache.invalidation_recovered", users=len(ids))
            return
        log.error(
            "cache.invalidation_abandoned",
            user_ids=[str(i) for i in ids],
            expires_within_s=self.ttl_ms * 1.1 / 1000,
        )

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- Redis access ----------------------------------------------------------------------

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis command; any failure becomes _RedisUnusableError (logged and counted)."""
        try:
            async with self.breaker:
                return await fn()
        except CircuitOpenError:
            CACHE_DEGRADED.labels(operation, "circuit_open").inc()
            raise _RedisUnusableError() from None
        except (RedisError, OSError) as exc:
            CACHE_DEGRADED.labels(operation, "error").inc()
            log.warning(
                "cache.redis_unavailable",
                operation=operation,
                error=f"{type(exc).__name__}: {exc}",
            )
            raise _RedisUnusableError() from exc


@dataclass
class PendingInvalidations:
    """Users whose cached profile a write made stale; evicted once the write committed."""

    user_ids: set[uuid.UUID] = field(default_factory=set)

    def add(self, user_id: uuid.UUID) -> None:
        """Mark a user's cached profile stale."""
        self.user_ids.add(user_id)
