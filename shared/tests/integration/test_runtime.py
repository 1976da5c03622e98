"""The service runtime opens and closes its resources as a unit."""

from __future__ import annotations

from typing import Any

import pytest

from servicekit.runtime import ServiceRuntime
from servicekit.settings import ServiceSettings

from .conftest import inbox, outbox


class Settings(ServiceSettings):
    service_name: str = "runtime-test"
    port: int = 9999
    database_url: str = ""


class TestRuntimeStart:
    async def test_a_failing_start_hook_closes_what_was_opened(
        self, database_url: str, infra: Any, engine: Any
    ) -> None:
        async def refuse(_: ServiceRuntime) -> None:
            raise RuntimeError("refusing to start: development keys in production")

        runtime = ServiceRuntime(
            Settings(
                database_url=database_url,
                amqp_url=infra.amqp_url,
                redis_url=infra.redis_url,
                events_exchange=f"{infra.amqp_prefix}runtime.events",
                jwks_url=None,
            ),
            outbox_table=outbox,
            inbox_table=inbox,
            on_start=[refuse],
        )
        with pytest.raises(RuntimeError, match="refusing to start"):
            await runtime.start()
        assert not runtime.bus.is_connected
        assert not runtime.relay.running
        assert runtime.engine.pool.checkedout() == 0
