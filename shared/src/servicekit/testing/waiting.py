"""Waiting for something a system does on its own time (a log line, a metric, an email).

One helper in two forms, built on tenacity: poll a probe until it returns something truthy,
return that, or fail the test naming what it waited for and the last value seen. There is no
form that returns False on timeout, so a forgotten ``assert`` cannot turn a wait into a test
that cannot fail.

``wait_until`` is for tests on the event loop: the probe may be a coroutine function, and the
loop keeps running (reconnects, consumers) while it waits. ``wait_until_sync`` is for blocking
code (a sync HTTP client, a subprocess).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")


def _falsy(value: object) -> bool:
    return not value


def _timed_out(what: str, timeout: float) -> Callable[[RetryCallState], NoReturn]:
    def fail(state: RetryCallState) -> NoReturn:
        outcome = state.outcome
        last = outcome.result() if outcome is not None and not outcome.failed else None
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")

    return fail


async def wait_until(
    probe: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call ``probe`` (awaiting it if it is a coroutine function) until its value is truthy."""

    async def once() -> T:
        value = probe()
        if inspect.isawaitable(value):
            return await value
        return value

    retrying = AsyncRetrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(_falsy),
        retry_error_callback=_timed_out(what, timeout),
    )
    return await retrying(once)


def wait_until_sync(
    probe: Callable[[], T],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """``wait_until`` for blocking code: the thread sleeps between calls."""
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(_falsy),
        retry_error_callback=_timed_out(what, timeout),
    )
    return retrying(probe)
