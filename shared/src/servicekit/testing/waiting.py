"""Waiting for something a system does on its own time (a log line, a metric, an email)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.1) -> T:
    """Call ``check`` until it returns something truthy or ``timeout`` runs out; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Await ``probe`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def until(
    check: Callable[[], T | Awaitable[T]], timeout: float = 15.0, interval: float = 0.1
) -> T:
    """``eventually`` for a test on the event loop: ``check`` may be a coroutine function, and
    the loop keeps running (reconnects, consumers) while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)
