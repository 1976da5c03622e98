"""What the payments-gateway holds open besides the shared runtime: the provider client."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payments_gateway.config import Settings
from payments_gateway.provider import BREAKER_NAME, ProviderClient
from payments_gateway.service import (
    purge_webhook_events,
    reconcile_pending_charges,
    sweep_stalled_payments,
)
from payments_gateway.transport import ShardedTransport
from servicekit import tracecontext
from servicekit.breaker import State
from servicekit.logging import get_logger
from servicekit.metrics import SWEPT, breaker_observer
from servicekit.outbox import Outbox
from servicekit.runtime import ServiceRuntime

log = get_logger(__name__)


class PaymentsContext:
    """The provider client and the runtime parts the handlers and routes need."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime: ServiceRuntime | None = None
        self._http: httpx.AsyncClient | None = None
        self._provider: ProviderClient | None = None
        self._reconciler: asyncio.Task[None] | None = None

    async def start(self, runtime: ServiceRuntime) -> None:
        """Open the provider client (an on_start hook of the runtime)."""
        s = self.settings
        self._runtime = runtime
        self._http = httpx.AsyncClient(
            base_url=s.provider_url,
            timeout=httpx.Timeout(
                s.provider_read_timeout,
                connect=s.provider_connect_timeout,
                pool=s.provider_connect_timeout,
            ),
            transport=ShardedTransport(
                shards=s.provider_connection_pools, max_connections=s.provider_max_connections
            ),
        )
        # Client spans for the provider call, and its traceparent travels to the provider.
        tracecontext.instrument_httpx(self._http)
        self._provider = ProviderClient(
            self._http,
            max_attempts=s.provider_max_attempts,
            backoff_initial=s.provider_backoff_initial,
            backoff_max=s.provider_backoff_max,
            retry_after_max=s.provider_retry_after_max,
            failure_threshold=s.breaker_failure_threshold,
            reset_timeout=s.breaker_reset_seconds,
            on_state_change=breaker_observer(s.service_name, BREAKER_NAME),
        )
        # Reported, not fatal: payments wait for the provider; reads and webhooks still work.
        runtime.health.add("payment_provider", self._circuit_check, critical=False)
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name="reconciler")
        log.info("provider.client_opened", provider_url=s.provider_url)

    async def _reconcile_forever(self) -> None:
        """Every reconcile_interval_seconds: settle pending charges whose webhook did not come,
        move on payments whose charge stalled, and forget webhook ids past their retention."""
        name = self.settings.service_name
        for outcome in ("succeeded", "failed", "failed_deadline", "deferred", "awaiting_webhook"):
            SWEPT.labels(name, "stalled_payments", outcome)
        SWEPT.labels(name, "pending_charges", "settled")
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_seconds)
            try:
                settled = await reconcile_pending_charges(
                    sessions=self.runtime.sessions,
                    outbox=self.runtime.outbox,
                    provider=self.provider,
                    settings=self.settings,
                )
                SWEPT.labels(name, "pending_charges", "settled").inc(settled)
                swept = await sweep_stalled_payments(
                    sessions=self.runtime.sessions,
                    outbox=self.runtime.outbox,
                    provider=self.provider,
                    settings=self.settings,
                )
                for outcome, count in swept.items():
                    SWEPT.labels(name, "stalled_payments", outcome).inc(count)
                await purge_webhook_events(sessions=self.runtime.sessions, settings=self.settings)
            except Exception:  # the next round tries again; a crash would end reconciling
                log.exception("payment.reconcile_failed")

    async def stop(self, runtime: ServiceRuntime) -> None:
        """Close the provider client (an on_stop hook, after the consumers finished)."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
            self._reconciler = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _circuit_check(self) -> None:
        breaker = self.provider.breaker
        state = breaker.state
        if state is State.OPEN:
            raise ConnectionError(f"circuit open, next trial in {breaker.retry_after:.1f}s")
        if state is State.HALF_OPEN:
            raise ConnectionError("circuit half_open, waiting for a trial call to succeed")

    @property
    def runtime(self) -> ServiceRuntime:
        """The running service's shared resources."""
        if self._runtime is None:
            raise RuntimeError("the payments context was not started")
        return self._runtime

    @property
    def provider(self) -> ProviderClient:
        """The provider client."""
        if self._provider is None:
            raise RuntimeError("the payments context was not started")
        return self._provider

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions on this service's database."""
        return self.runtime.sessions

    @property
    def outbox(self) -> Outbox:
        """This service's outbox."""
        return self.runtime.outbox
