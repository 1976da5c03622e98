"""Login throttle: per-process counters and the fall-back when Redis fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from auth_service.errors import LoginThrottled
from auth_service.throttle import LoginThrottle, _MemoryCounters, address_bucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DeadRedis:
    """Every script call fails like a refused connection; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def register_script(self, _: str) -> Callable[..., Awaitable[Any]]:
        async def call(**_: Any) -> Any:
            self.calls += 1
            raise RedisConnectionError("Connection refused")

        return call


class TestMemoryCounters:
    def test_counts_within_a_window_and_restarts_after_it(self) -> None:
        clock = FakeClock()
        counters = _MemoryCounters(clock)
        assert counters.attempt(("k",), 60) == [(1, 60)]
        clock.now += 10
        assert counters.attempt(("k",), 60) == [(2, 50)]
        clock.now += 51
        assert counters.attempt(("k",), 60) == [(1, 60)]

    def test_taking_back_never_goes_below_zero(self) -> None:
        counters = _MemoryCounters(FakeClock())
        counters.attempt(("k",), 60)
        counters.take_back(("k",))
        counters.take_back(("k",))
        assert counters.attempt(("k",), 60) == [(1, 60)]


class TestAddressBucket:
    @pytest.mark.parametrize(
        ("address", "bucket"),
        [
            ("203.0.113.7", "203.0.113.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("unknown", "unknown"),
        ],
    )
    def test_ipv6_clients_are_counted_per_64(self, address: str, bucket: str) -> None:
        assert address_bucket(address) == bucket


class TestLoginThrottleWithoutRedis:
    async def test_falls_back_to_memory_and_stops_asking_redis(self) -> None:
        redis = DeadRedis()
        clock = FakeClock()
        throttle = LoginThrottle(
            redis=redis,  # type: ignore[arg-type]
            email_limit=2,
            address_limit=100,
            window_seconds=60,
            clock=clock,
        )
        for _ in range(2):
            await throttle.attempt(email="a@example.com", address="203.0.113.7")
        with pytest.raises(LoginThrottled) as raised:
            await throttle.attempt(email="a@example.com", address="203.0.113.7")
        assert raised.value.headers["Retry-After"] == "60"
        # The breaker opened on the first failure: a dead Redis is not waited on every login.
        assert redis.calls == 1

    async def test_a_success_is_taken_back(self) -> None:
        throttle = LoginThrottle(
            redis=DeadRedis(),  # type: ignore[arg-type]
            email_limit=1,
            address_limit=100,
            window_seconds=60,
            clock=FakeClock(),
        )
        for _ in range(3):
            attempt = await throttle.attempt(email="a@example.com", address="203.0.113.7")
            await throttle.succeeded(attempt)
