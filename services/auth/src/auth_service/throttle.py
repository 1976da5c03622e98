"""Login throttling: failed attempts per email and per client address, in fixed windows.

Every attempt is counted before the password is checked (so a burst of parallel guesses
cannot all slip past the check) and a successful one is taken back. Counters live in Redis,
shared by every instance; when Redis fails or is slow, a per-process counter takes over so
login keeps working (a circuit breaker keeps the dead Redis from adding its timeout to every
login).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from auth_service.errors import LoginThrottled
from servicekit.breaker import CircuitBreaker, CircuitOpenError
from servicekit.logging import get_logger
from servicekit.metrics import LOGIN_THROTTLED, breaker_observer
from servicekit.redisclient import RedisClient

log = get_logger(__name__)

# The limits in the order attempt() counts them (the metric's ``scope`` label).
SCOPES = ("email", "address")
BREAKER_NAME = "login-throttle-redis"

# KEYS[1]: a counter; ARGV[1]: window in ms. Returns its count and remaining ms.
_ATTEMPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

# KEYS[1]: a counter to take one attempt back from (never creating or leaving a stray key).
_TAKE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('DECR', KEYS[1]) <= 0 then
  redis.call('DEL', KEYS[1])
end
return 1
"""

_MEMORY_MAX_KEYS = 100_000


def address_bucket(address: str) -> str:
    """The unit an address is throttled by: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Attempt:
    """The counters one login attempt was counted in."""

    keys: tuple[str, ...]
    backend: str


class _MemoryCounters:
    """Fixed-window counters of one process (the fallback while Redis is unavailable)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counters: dict[str, tuple[int, float]] = {}

    def attempt(self, keys: tuple[str, ...], window: float) -> list[tuple[int, float]]:
        now = self._clock()
        if len(self._counters) >= _MEMORY_MAX_KEYS:
            self._evict(now)
        result = []
        for key in keys:
            count, expires = self._counters.get(key, (0, now + window))
            if expires <= now:
                count, expires = 0, now + window
            self._counters[key] = (count + 1, expires)
            result.append((count + 1, expires - now))
        return result

    def take_back(self, keys: tuple[str, ...]) -> None:
        now = self._clock()
        for key in keys:
            count, expires = self._counters.get(key, (0, now))
            if count <= 1 or expires <= now:
                self._counters.pop(key, None)
            else:
                self._counters[key] = (count - 1, expires)

    def _evict(self, now: float) -> None:
        self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        # Still full of live counters: drop the oldest rather than grow without bound.
        while len(self._counters) >= _MEMORY_MAX_KEYS:
            self._counters.pop(next(iter(self._counters)))


class LoginThrottle:
    """Allows ``email_limit`` failed logins per email and ``address_limit`` per address."""

    def __init__(
        self,
        *,
        redis: RedisClient,
        email_limit: int,
        address_limit: int,
        window_seconds: int,
        prefix: str = "auth:login-attempts",
        clock: Callable[[], float] = time.monotonic,
        service: str = "auth",
    ) -> None:
        self._redis = redis
        # Every scope is exported from the start, so a dashboard shows zeros, not gaps.
        self._throttled = {scope: LOGIN_THROTTLED.labels(service, scope) for scope in SCOPES}
        self.email_limit = email_limit
        self.address_limit = address_limit
        self.window_seconds = window_seconds
        self._prefix = prefix
        self._attempt_script = redis.register_script(_ATTEMPT)
        self._take_back_script = redis.register_script(_TAKE_BACK)
        self._memory = _MemoryCounters(clock)
        self._breaker = CircuitBreaker(
            BREAKER_NAME,
            failure_threshold=1,
            reset_timeout=5,
            on_state_change=breaker_observer(service, BREAKER_NAME),
        )

    def _keys(self, email: str, address: str) -> tuple[str, str]:
        # Emails are personal data: the key holds a digest, not the address.
        digest = hashlib.sha256(email.encode("utf-8")).hexdigest()[:32]
        return (
            f"{self._prefix}:email:{digest}",
            f"{self._prefix}:addr:{address_bucket(address)}",
        )

    async def attempt(self, *, email: str, address: str) -> Attempt:
        """Count an attempt; raise LoginThrottled (429) when either limit is exceeded."""
        keys = self._keys(email, address)
        counts = await self._redis_attempt(keys)
        backend = "redis"
        if counts is None:
            counts = self._memory.attempt(keys, self.window_seconds)
            backend = "memory"
        limits = (self.email_limit, self.address_limit)
        exceeded = {
            scope: remaining
            for scope, (count, remaining), limit in zip(SCOPES, counts, limits, strict=True)
            if count > limit
        }
        if exceeded:
            # Counted once per refusal, under the limit that sets its Retry-After.
            scope = max(exceeded, key=exceeded.__getitem__)
            retry_after = exceeded[scope]
            self._throttled[scope].inc()
            log.info("auth.login_throttled", backend=backend, scope=scope, retry_after=retry_after)
            raise LoginThrottled(retry_after=math.ceil(retry_after))
        return Attempt(keys=keys, backend=backend)

    async def succeeded(self, attempt: Attempt) -> None:
        """Take a successful attempt back: only failures count against the limits."""
        if attempt.backend == "redis" and await self._redis_take_back(attempt.keys):
            return
        self._memory.take_back(attempt.keys)

    async def _redis_attempt(self, keys: tuple[str, ...]) -> list[tuple[int, float]] | None:
        try:
            async with self._breaker:
                # One call per counter: in a Redis Cluster the keys live in different slots.
                window_ms = self.window_seconds * 1000
                replies = [await self._attempt_script(keys=[key], args=[window_ms]) for key in keys]
        except CircuitOpenError:
            return None
        except (RedisError, OSError) as exc:
            log.warning("auth.throttle_redis_unavailable", error=type(exc).__name__)
            return None
        return [(int(count), int(ttl) / 1000) for count, ttl in replies]

    async def _redis_take_back(self, keys: tuple[str, ...]) -> bool:
        try:
            async with self._breaker:
                for key in keys:
                    await self._take_back_script(keys=[key])
        except CircuitOpenError:
            return False
        except (RedisError, OSError) as exc:
            log.warning("auth.throttle_redis_unavailable", error=type(exc).__name__)
            return False
        return True
