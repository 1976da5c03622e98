"""The service runtime opens and closes its resources as a unit."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from servicekit.runtime import ServiceRuntime, create_service_app
from servicekit.settings import ServiceSettings
from servicekit.testing.plugin import serve_app

from .conftest import inbox, outbox


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
