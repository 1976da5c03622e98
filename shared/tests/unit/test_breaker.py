"""The circuit breaker stops hammering a failing dependency and probes it one call at a time."""

from __future__ import annotations

import asyncio

import pytest

from servicekit.breaker import CircuitBreaker, CircuitOpenError, State


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ProviderDownError(Exception):
    pass


class CardDeclinedError(Exception):
    pass


class Calls:
    """A dependency that counts how often it was really called."""

    def __init__(self) -> None:
        self.count = 0

    async def ok(self) -> str:
        self.count += 1
        return "charged"

    async def fail(self) -> str:
        self.count += 1
        raise ProviderDownError("503 from provider")

    async def decline(self) -> str:
        self.count += 1
        raise CardDeclinedError("declined")


def state_of(breaker: CircuitBreaker) -> State:
    return breaker.state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, State, State]]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[tuple[str, State, State]]) -> CircuitBreaker:
    return CircuitBreaker(
        "provider",
        failure_threshold=3,
        reset_timeout=30.0,
        clock=clock,
        excluded=(CardDeclinedError,),
        on_state_change=lambda name, old, new: changes.append((name, old, new)),
    )


async def trip(breaker: CircuitBreaker, calls: Calls) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(ProviderDownError):
            await breaker.call(calls.fail)


class TestClosed:
    async def test_calls_pass_through_and_return_their_result(
        self, breaker: CircuitBreaker
    ) -> None:
        calls = Calls()

        assert await breaker.call(calls.ok) == "charged"
        assert state_of(breaker) is State.CLOSED
        assert calls.count == 1

    async def test_failures_below_the_threshold_keep_it_closed(
        self, breaker: CircuitBreaker
    ) -> None:
        calls = Calls()
        for _ in range(2):
            with pytest.raises(ProviderDownError):
                await breaker.call(calls.fail)

        assert state_of(breaker) is State.CLOSED
        assert breaker.failure_count == 2

    async def test_a_success_resets_the_consecutive_count(self, breaker: CircuitBreaker) -> None:
        calls = Calls()
        for _ in range(2):
            with pytest.raises(ProviderDownError):
                await breaker.call(calls.fail)
        await breaker.call(calls.ok)
        for _ in range(2):
            with pytest.raises(ProviderDownError):
                await breaker.call(calls.fail)

        assert state_of(breaker) is State.CLOSED
        assert breaker.failure_count == 2

    async def test_n_consecutive_failures_open_it(
        self, breaker: CircuitBreaker, changes: list[tuple[str, State, State]]
    ) -> None:
        await trip(breaker, Calls())

        assert state_of(breaker) is State.OPEN
        assert changes == [("provider", State.CLOSED, State.OPEN)]

    async def test_excluded_exceptions_are_not_failures(self, breaker: CircuitBreaker) -> None:
        calls = Calls()
        for _ in range(10):
            with pytest.raises(CardDeclinedError):
                await breaker.call(calls.decline)

        assert state_of(breaker) is State.CLOSED
        assert breaker.failure_count == 0
        assert calls.count == 10

    async def test_an_excluded_exception_breaks_a_run_of_failures(
        self, breaker: CircuitBreaker
    ) -> None:
        calls = Calls()
        for call in (calls.fail, calls.fail, calls.decline, calls.fail, calls.fail):
            with pytest.raises((ProviderDownError, CardDeclinedError)):
                await breaker.call(call)

        assert state_of(breaker) is State.CLOSED

    async def test_cancellation_is_not_a_failure(self, breaker: CircuitBreaker) -> None:
        for _ in range(5):
            task = asyncio.create_task(breaker.call(lambda: asyncio.sleep(60)))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        assert state_of(breaker) is State.CLOSED
        assert breaker.failure_count == 0


class TestOpen:
    async def test_open_circuit_refuses_without_calling(
        self, breaker: CircuitBreaker, clock: FakeClock
    ) -> None:
        calls = Calls()
        await trip(breaker, calls)
        clock.advance(10)

        with pytest.raises(CircuitOpenError) as caught:
            await breaker.call(calls.ok)

        assert calls.count == 3
        assert caught.value.name == "provider"
        assert caught.value.retry_after == pytest.approx(20.0)
        assert breaker.retry_after == pytest.approx(20.0)

    async def test_it_reports_half_open_once_the_timeout_elapsed(
        self, breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, State, State]]
    ) -> None:
        await trip(breaker, Calls())
        clock.advance(29.9)
        assert state_of(breaker) is State.OPEN

        clock.advance(0.1)

        assert state_of(breaker) is State.HALF_OPEN
        assert breaker.retry_after == 0.0
        assert changes[-1] == ("provider", State.OPEN, State.HALF_OPEN)

    async def test_the_context_manager_form_is_refused_too(self, breaker: CircuitBreaker) -> None:
        await trip(breaker, Calls())
        entered = False

        with pytest.raises(CircuitOpenError):
            async with breaker:
                entered = True

        assert not entered


class TestHalfOpen:
    async def test_a_successful_trial_closes_it(
        self, breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, State, State]]
    ) -> None:
        calls = Calls()
        await trip(breaker, calls)
        clock.advance(30)

        assert await breaker.call(calls.ok) == "charged"

        assert state_of(breaker) is State.CLOSED
        assert breaker.failure_count == 0
        assert [new for _, _, new in changes] == [State.OPEN, State.HALF_OPEN, State.CLOSED]

    async def test_a_failed_trial_reopens_it_with_a_fresh_timeout(
        self, breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, State, State]]
    ) -> None:
        calls = Calls()
        await trip(breaker, calls)
        clock.advance(45)

        with pytest.raises(ProviderDownError):
            await breaker.call(calls.fail)

        assert state_of(breaker) is State.OPEN
        assert breaker.retry_after == pytest.approx(30.0)
        clock.advance(29)
        with pytest.raises(CircuitOpenError):
            await breaker.call(calls.ok)
        assert [new for _, _, new in changes] == [State.OPEN, State.HALF_OPEN, State.OPEN]

    async def test_an_excluded_exception_in_the_trial_closes_it(
        self, breaker: CircuitBreaker, clock: FakeClock
    ) -> None:
        calls = Calls()
        await trip(breaker, calls)
        clock.advance(30)

        with pytest.raises(CardDeclinedError):
            await breaker.call(calls.decline)

        assert state_of(breaker) is State.CLOSED

    async def test_only_one_trial_call_runs_at_a_time(
        self, breaker: CircuitBreaker, clock: FakeClock
    ) -> None:
        await trip(breaker, Calls())
        clock.advance(30)
        release = asyncio.Event()
        started = 0

        async def slow_success() -> str:
            nonlocal started
            started += 1
            await release.wait()
            return "charged"

        tasks = [asyncio.create_task(breaker.call(slow_success)) for _ in range(5)]
        await asyncio.sleep(0.01)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)

        assert started == 1
        assert results.count("charged") == 1
        refused = [result for result in results if isinstance(result, CircuitOpenError)]
        assert len(refused) == 4
        assert all(0 < error.retry_after <= 30 for error in refused)
        assert state_of(breaker) is State.CLOSED

    async def test_a_cancelled_trial_frees_the_slot_for_the_next_caller(
        self, breaker: CircuitBreaker, clock: FakeClock
    ) -> None:
        calls = Calls()
        await trip(breaker, calls)
        clock.advance(30)
        trial = asyncio.create_task(breaker.call(lambda: asyncio.sleep(60)))
        await asyncio.sleep(0)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial

        assert state_of(breaker) is State.HALF_OPEN
        assert await breaker.call(calls.ok) == "charged"
        assert state_of(breaker) is State.CLOSED

    async def test_late_results_of_calls_admitted_before_opening_do_not_move_it(
        self, breaker: CircuitBreaker, clock: FakeClock
    ) -> None:
        calls = Calls()
        release = asyncio.Event()

        async def slow_success() -> str:
            await release.wait()
            return "charged"

        straggler = asyncio.create_task(breaker.call(slow_success))
        await asyncio.sleep(0)
        await trip(breaker, calls)
        release.set()
        await straggler

        assert state_of(breaker) is State.OPEN


class TestConfiguration:
    def test_threshold_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            CircuitBreaker("x", failure_threshold=0)

    def test_state_values_are_readable_names(self) -> None:
        assert [str(state) for state in State] == ["closed", "open", "half_open"]
