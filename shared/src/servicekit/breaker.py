"""An async circuit breaker: stop calling a dependency that keeps failing, probe it later."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from types import TracebackType
from typing import TypeVar

from servicekit.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

# While a trial call is in flight, others are told to come back this soon (seconds).
_TRIAL_BUSY_RETRY = 1.0


class State(StrEnum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(Exception):
    """The call was refused without being made: the circuit is open."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"circuit {name!r} is open; retry in {retry_after:.1f}s")


class CircuitBreaker:
    """Closed → open after N consecutive failures; open → half-open after a timeout;
    half-open admits one trial call: success closes, failure reopens.

    Exceptions listed in ``excluded`` count as answers from a healthy dependency (a card
    decline proves the provider is up), not as failures. State lives in one event loop;
    no await happens between reading and changing it, so no lock is needed.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        excluded: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, State, State], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout < 0:
            raise ValueError("reset_timeout must not be negative")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.excluded = excluded
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_owner: asyncio.Task[object] | None = None

    @property
    def state(self) -> State:
        """The current state; an open circuit whose timeout elapsed reports half-open."""
        self._refresh()
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures seen while closed."""
        return self._failures

    @property
    def retry_after(self) -> float:
        """Seconds until the circuit will admit a trial call (0 when it would now)."""
        if self.state is State.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout - self._clock())
        return 0.0

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Call ``fn`` through the breaker, or raise CircuitOpenError without calling it."""
        async with self:
            return await fn()

    async def __aenter__(self) -> CircuitBreaker:
        self._admit()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        is_trial = self._trial_owner is not None and self._trial_owner is _current_task()
        if is_trial:
            self._trial_owner = None
        if exc is None or isinstance(exc, self.excluded):
            self._record_success(is_trial)
        elif isinstance(exc, Exception):
            self._record_failure(is_trial)
        # Cancellation and other BaseExceptions say nothing about the dependency.

    def _refresh(self) -> None:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._transition(State.HALF_OPEN)

    def _admit(self) -> None:
        self._refresh()
        if self._state is State.CLOSED:
            return
        if self._state is State.OPEN:
            raise CircuitOpenError(self.name, self.retry_after)
        if self._trial_owner is not None:
            raise CircuitOpenError(self.name, min(_TRIAL_BUSY_RETRY, self.reset_timeout))
        owner = _current_task()
        if owner is None:
            raise RuntimeError("CircuitBreaker must be used inside an asyncio task")
        self._trial_owner = owner

    def _record_success(self, is_trial: bool) -> None:
        if self._state is State.CLOSED:
            self._failures = 0
        elif is_trial:
            self._failures = 0
            self._transition(State.CLOSED)

    def _record_failure(self, is_trial: bool) -> None:
        # Calls admitted before the circuit opened may still be finishing: only a failure
        # while closed, or of the trial call, moves the breaker.
        if self._state is State.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
        elif is_trial:
            self._failures += 1
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(State.OPEN)

    def _transition(self, new: State) -> None:
        old, self._state = self._state, new
        if old is new:
            return
        level = log.warning if new is State.OPEN else log.info
        level("circuit.state_changed", breaker=self.name, old=str(old), new=str(new))
        if self._on_state_change is not None:
            self._on_state_change(self.name, old, new)


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
