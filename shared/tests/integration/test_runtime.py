"""The service runtime opens and closes its resources as a unit."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

from servicekit.logging import captured_lines
from servicekit.runtime import ServiceRuntime, create_service_app
from servicekit.settings import ServiceSettings
from servicekit.testing.plugin import serve_app

from .support import inbox, outbox


class Settings(ServiceSettings):
    service_name: str = "runtime-test"
    port: int = 9999
    database_url: str = ""


def settings_for(infra: Any, database_url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        amqp_url=infra.amqp_url,
        redis_url=infra.redis_url,
        events_exchange=f"{infra.amqp_prefix}runtime.events",
        jwks_url=None,
        **overrides,
    )


class TestRuntimeStart:
    async def test_a_failing_start_hook_closes_what_was_opened(
        self, database_url: str, infra: Any, engine: Any
    ) -> None:
        async def refuse(_: ServiceRuntime) -> None:
            raise RuntimeError("refusing to start: development keys in production")

        runtime = ServiceRuntime(
            settings_for(infra, database_url),
            outbox_table=outbox,
            inbox_table=inbox,
            on_start=[refuse],
        )
        with pytest.raises(RuntimeError, match="refusing to start"):
            await runtime.start()
        assert not runtime.bus.is_connected
        assert not runtime.relay.running
        assert runtime.engine.pool.checkedout() == 0


class TestGarbageCollection:
    async def test_the_heap_is_frozen_while_serving_and_released_on_stop(
        self, database_url: str, infra: Any, engine: Any
    ) -> None:
        threshold = gc.get_threshold()
        runtime = ServiceRuntime(
            settings_for(infra, database_url, gc_gen0_threshold=12_345),
            outbox_table=outbox,
            inbox_table=inbox,
        )
        app = create_service_app(runtime=runtime, title="gc-test", prefix="/gc")
        try:
            async with serve_app(app) as client:
                assert (await client.get("/health/live")).status_code == 200
                assert gc.get_freeze_count() > 10_000  # the modules and schemas loaded by now
                assert gc.get_threshold()[0] == 12_345
            assert gc.get_freeze_count() == 0
        finally:
            gc.set_threshold(*threshold)


class TestRuntimeStop:
    async def test_a_hanging_hook_or_a_task_that_ignores_cancel_does_not_hold_shutdown(
        self, database_url: str, infra: Any, engine: Any
    ) -> None:
        released = asyncio.Event()
        later_hook_ran = False

        async def hang(_: ServiceRuntime) -> None:
            await released.wait()

        async def later(_: ServiceRuntime) -> None:
            nonlocal later_hook_ran
            later_hook_ran = True

        async def ignore_cancel() -> None:
            # What a lost cancellation looks like to stop(): the task just keeps going.
            while not released.is_set():
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    continue

        runtime = ServiceRuntime(
            settings_for(infra, database_url),
            outbox_table=outbox,
            inbox_table=inbox,
            on_stop=[later, hang],  # run last to first: hang, then later
            stop_step_seconds=0.5,
        )
        await runtime.start()
        stubborn = asyncio.create_task(ignore_cancel(), name="stubborn")
        runtime._tasks.append(stubborn)
        try:
            with captured_lines() as lines:
                started = time.monotonic()
                await asyncio.wait_for(runtime.stop(), timeout=20)
                took = time.monotonic() - started
        finally:
            released.set()
            await stubborn

        events = [line["event"] for line in lines]
        assert "service.tasks_did_not_stop" in events
        assert "service.stop_hook_failed" in events
        assert later_hook_ran
        assert events[-1] == "service.stopped"
        assert not runtime.bus.is_connected
        assert runtime.engine.pool.checkedout() == 0
        assert took < 10
