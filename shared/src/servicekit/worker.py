"""A background loop woken by PostgreSQL NOTIFY on a channel, with polling as the fallback.

A transaction that creates work issues ``pg_notify(channel, '')``, which PostgreSQL delivers at
commit, so the loop starts within milliseconds; a lost notification (listener reconnecting,
another instance's commit) is covered by polling. The outbox relay and the notifications
dispatcher both run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

log = structlog.get_logger("servicekit.worker")


class NotifiedLoop:
    """Runs ``step`` whenever woken (NOTIFY) or every ``poll_interval`` seconds.

    ``step`` returns how many items it handled; a full batch runs it again at once. An error
    backs off (0.2 s doubling to 5 s) without being shortened by notifications, so a dead
    dependency is not hammered by every commit.
    """

    def __init__(
        self,
        *,
        name: str,
        dsn: str | None,
        channel: str,
        step: Callable[[], Awaitable[int]],
        batch_size: int,
        poll_interval: float,
    ) -> None:
        self.name = name
        self.dsn = dsn
        self.channel = channel
        self.step = step
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> None:
        """Listen and start looping in the background."""
        self._stopping.clear()
        await self._listen()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, *, timeout: float | None = None) -> bool:
        """Stop after the current step; False if it did not finish within ``timeout``."""
        self._stopping.set()
        self._wakeup.set()
        finished = True
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=timeout)
            except TimeoutError:
                finished = False
        await self._unlisten()
        return finished

    def wake(self) -> None:
        """Run the next step now (as a notification would)."""
        self._wakeup.set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _listen(self) -> None:
        if self.dsn is None:
            return
        try:
            conn = await asyncpg.connect(self.dsn, timeout=5)
            await conn.add_listener(self.channel, self._on_notify)
            conn.add_termination_listener(self._on_listener_lost)
            self._listener = conn
        except Exception as exc:
            # Polling still does all the work; LISTEN is tried again on the next round.
            log.warning(
                "worker.listen_failed", worker=self.name, error=f"{type(exc).__name__}: {exc}"
            )
            self._listener = None

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    def _on_listener_lost(self, *_: object) -> None:
        self._listener = None

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                handled = await self.step()
                failures = 0
                if handled >= self.batch_size:
                    continue
            except Exception as exc:
                failures += 1
                log.warning(
                    "worker.step_failed", worker=self.name, error=f"{type(exc).__name__}: {exc}"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), timeout=min(0.1 * 2**failures, 5.0)
                    )
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_interval)
            self._wakeup.clear()
