"""What every service holds open while it runs, and the FastAPI app around it.

``ServiceRuntime`` opens the engine, Redis, the broker connection, the outbox relay and the
consumers in the app's lifespan and closes them in reverse on shutdown (SIGTERM: stop consuming,
finish in-flight handlers, flush the outbox, close connections). ``create_service_app`` wires the
parts every service shares: error envelope, request ids, access log, health, docs under the
service's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import Receive, Scope, Send
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from servicekit import tracecontext
from servicekit.bus import Consumer, ConsumerObserver, EventBus, Handler, QueueSettings
from servicekit.db import create_engine, ping, session_factory
from servicekit.docs import install_docs
from servicekit.errors import (
    DatabaseUnavailable,
    LogUnhandledOnce,
    error_response,
    install_error_handlers,
)
from servicekit.health import (
    HealthRegistry,
    broker_check,
    database_check,
    health_router,
    redis_check,
)
from servicekit.logging import configure_logging, get_logger
from servicekit.metrics import (
    CONSUMERS_ACTIVE,
    EVENTS_PUBLISHED,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PENDING,
    OUTBOX_PUBLISH_FAILURES,
    ConsumerMetrics,
    metrics_router,
    observe_http,
)
from servicekit.middleware import ResponseObserver, install_middleware
from servicekit.outbox import Outbox, OutboxRelay
from servicekit.redisclient import RedisClient, create_redis
from servicekit.retention import RetentionLoop, RetentionPolicy
from servicekit.revocation import Denylist, revocations
from servicekit.security import JwksCache, Principal, TokenVerifier
from servicekit.settings import ServiceSettings

log = structlog.get_logger("servicekit.runtime")

Hook = Callable[["ServiceRuntime"], Awaitable[None]]


REVOCATIONS_PURPOSE = "revocations"


@dataclass(frozen=True)
class ConsumerSpec:
    """One queue of a service: its purpose (part of the queue name) and handlers by event type."""

    purpose: str
    handlers: Mapping[str, Handler]
    prefetch: int | None = None
    concurrency: int | None = None


@dataclass
class ServiceRuntime:
    """The open resources of one service process."""

    settings: ServiceSettings
    outbox_table: Table
    inbox_table: Table
    consumers: Sequence[ConsumerSpec] = ()
    publishes: Sequence[str] | None = None
    is_revoked: Callable[[Principal], Awaitable[bool]] | None = None
    on_start: Sequence[Hook] = ()
    on_stop: Sequence[Hook] = ()
    observers: list[ConsumerObserver] = field(default_factory=list)
    # The service's own tables that grow per event or request (the inbox, the outbox and the
    # denylist are added by the runtime).
    retention: Sequence[RetentionPolicy] = ()

    engine: AsyncEngine = field(init=False)
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    redis: RedisClient = field(init=False)
    bus: EventBus = field(init=False)
    relay: OutboxRelay = field(init=False)
    outbox: Outbox = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    verifier: TokenVerifier = field(init=False)
    health: HealthRegistry = field(init=False)
    denylist: Denylist = field(init=False)
    retention_loop: RetentionLoop = field(init=False)
    running_consumers: list[Consumer] = field(init=False, default_factory=list)
    # The longest stop() waits for each of its steps (the background tasks, each on_stop hook).
    stop_step_seconds: float = 30.0
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _stopping: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.outbox = Outbox(self.outbox_table, producer=s.service_name, publishes=self.publishes)
        self.health = HealthRegistry()

    async def start(self) -> None:
        """Open everything; the broker is awaited for a while so start order does not matter.

        If any step fails, what was opened so far is closed again before the error propagates.
        """
        try:
            await self._open()
        except BaseException:
            await self._close_opened()
            raise

    async def _open(self) -> None:
        s = self.settings
        self.engine = create_engine(
            s.database_url,
            pool_size=s.db_pool_size,
            max_overflow=s.db_max_overflow,
            application_name=s.service_name,
        )
        tracecontext.instrument_asyncpg()
        tracecontext.instrument_redis()
        self.sessions = session_factory(self.engine)
        self.denylist = Denylist(self.engine)
        await self.denylist.start()
        self.redis = create_redis(
            s.redis_url,
            timeout=s.redis_timeout_ms / 1000,
            max_connections=s.redis_max_connections,
        )
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        tracecontext.instrument_httpx(self.http)
        jwks = JwksCache(
            url=s.jwks_url if not s.jwks_file else None, file=s.jwks_file, http_client=self.http
        )
        self.verifier = TokenVerifier(
            jwks=jwks, issuer=s.jwt_issuer, audience=s.jwt_audience, is_revoked=self._is_revoked
        )
        self.bus = EventBus(url=s.amqp_urls, exchange=s.events_exchange, service=s.service_name)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((ConnectionError, OSError)),
            wait=wait_exponential(multiplier=0.2, max=3),
            stop=stop_after_delay(60),
            reraise=True,
        ):
            with attempt:
                await self.bus.connect()
        self.health.add("database", database_check(self.engine))
        self.health.add("broker", broker_check(lambda: self.bus.is_connected))
        # Every service degrades without Redis (cache, throttles fall back), so it is not fatal.
        self.health.add("redis", redis_check(self.redis), critical=False)

        self.relay = OutboxRelay(
            engine=self.engine, table=self.outbox_table, publish=self._publish_counted
        )
        self.retention_loop = RetentionLoop(
            self.engine,
            self.retention_policies(),
            service=s.service_name,
            interval=s.retention_interval_seconds,
            batch_size=s.retention_batch_size,
        )
        await self.relay.start()
        for hook in self.on_start:
            await hook(self)
        revocations = ConsumerSpec(
            REVOCATIONS_PURPOSE,
            {
                "session.revoked": self.denylist.on_session_revoked,
                "user.deleted": self.denylist.on_user_deleted,
            },
        )
        metrics = ConsumerMetrics(s.service_name)
        self.observers.append(metrics)
        for spec in [revocations, *self.consumers]:
            consumer = self.bus.consumer(
                spec.purpose,
                handlers=spec.handlers,
                session_factory=self.sessions,
                inbox=self.inbox_table,
                retry_delays_ms=s.retry_delays_ms,
                prefetch=spec.prefetch or s.consumer_prefetch,
                concurrency=spec.concurrency,
                observers=self.observers,
                queues=QueueSettings(
                    initial_group_size=s.queue_replicas, delivery_limit=s.queue_delivery_limit
                ),
                is_unavailable=_is_connection_failure,
            )
            self.running_consumers.append(consumer)
            metrics.expose(consumer.queue_name, spec.handlers)
        await self._set_consuming(True)
        self._tasks = [
            asyncio.create_task(self._watch_database(), name="database-watch"),
            asyncio.create_task(self._watch_outbox(), name="outbox-gauges"),
            asyncio.create_task(self.retention_loop.run_forever(), name="retention"),
        ]
        log.info("service.started", consumers=[c.queue_name for c in self.running_consumers])

    def retention_policies(self) -> list[RetentionPolicy]:
        """Every table of this service that grows per event or request, with its period."""
        s = self.settings
        return [
            RetentionPolicy(
                self.inbox_table, "received_at", timedelta(seconds=s.inbox_retention_seconds)
            ),
            RetentionPolicy(
                self.outbox_table, "published_at", timedelta(seconds=s.outbox_retention_seconds)
            ),
            # A revocation matters until the token it names has expired: an hour past that
            # covers any clock skew between the instances that check it.
            RetentionPolicy(revocations, "expires_at", timedelta(hours=1)),
            *self.retention,
        ]

    async def _publish_counted(self, body: bytes, **kwargs: Any) -> None:
        try:
            await self.bus.publish_raw(body, **kwargs)
        except Exception:
            # The relay keeps the row and retries it with backoff (and logs the batch).
            OUTBOX_PUBLISH_FAILURES.labels(self.settings.service_name, kwargs["event_type"]).inc()
            raise
        EVENTS_PUBLISHED.labels(self.settings.service_name, kwargs["event_type"]).inc()

    async def _set_consuming(self, on: bool) -> None:
        """Start or stop every consumer of this instance (messages wait in their queues)."""
        for consumer in self.running_consumers:
            if on and not consumer.consuming:
                await consumer.start()
            elif not on and consumer.consuming:
                await consumer.stop()
        active = sum(c.consuming for c in self.running_consumers)
        CONSUMERS_ACTIVE.labels(self.settings.service_name).set(active)

    async def _watch_database(self, interval: float = 1.0) -> None:
        """Stop consuming while the database is down (a handler could not commit anyway)."""
        consuming = True
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                async with asyncio.timeout(2):
                    await ping(self.engine)
                healthy = True
            except Exception:
                healthy = False
            if healthy != consuming:
                try:
                    await self._set_consuming(healthy)
                    consuming = healthy
                    log.warning("service.consuming" if healthy else "service.paused_consuming")
                except Exception as exc:
                    log.warning("service.consumer_toggle_failed", error=str(exc))

    async def _watch_outbox(self, interval: float = 5.0) -> None:
        name = self.settings.service_name
        while not self._stopping:
            with contextlib.suppress(Exception):
                pending, age = await self.relay.backlog()
                OUTBOX_PENDING.labels(name).set(pending)
                OUTBOX_OLDEST_AGE.labels(name).set(age)
            await asyncio.sleep(interval)

    async def _is_revoked(self, principal: Principal) -> bool:
        if await self.denylist.is_revoked(principal):
            return True
        return await self.is_revoked(principal) if self.is_revoked else False

    async def stop(self) -> None:
        """Drain and close, in reverse order of opening.

        Each step is bounded by ``stop_step_seconds``: a background task that does not end when
        cancelled (a cancellation can be lost, e.g. by ``asyncio.timeout`` in Python 3.11 when
        it races the timeout) or a hook that hangs is logged and left behind, and shutdown goes
        on to close the broker, the outbox relay and the pools.
        """
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=self.stop_step_seconds)
            if running:
                names = sorted(task.get_name() for task in running)
                log.warning("service.tasks_did_not_stop", tasks=names)
        await self.bus.stop_consuming()
        for hook in reversed(self.on_stop):
            try:
                async with asyncio.timeout(self.stop_step_seconds):
                    await hook(self)
            except Exception as exc:
                name = getattr(hook, "__qualname__", repr(hook))
                error = f"{type(exc).__name__}: {exc}"
                log.warning("service.stop_hook_failed", hook=name, error=error)
        await self.relay.stop(flush_timeout=5.0)
        await self._close_opened()
        log.info("service.stopped")

    async def _close_opened(self) -> None:
        """Close whichever resources were opened (all of them after a full start)."""
        opened = vars(self)
        if "relay" in opened:
            await self.relay.stop(flush_timeout=0)
        if "denylist" in opened:
            await self.denylist.stop()
        if "bus" in opened:
            await self.bus.close()
        if "http" in opened:
            await self.http.aclose()
        if "redis" in opened:
            await self.redis.aclose()
        if "engine" in opened:
            await self.engine.dispose()


# asyncpg's refusals at connect time (server full, starting up, shutting down).
_ASYNCPG_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
)

# What a lost or unreachable database raises (asyncpg's connect raises plain OSErrors).
DATABASE_DOWN: tuple[type[Exception], ...] = (
    OSError,
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
)


def _is_connection_failure(exc: BaseException) -> bool:
    """True for errors meaning the database could not be reached or refused a connection."""
    if isinstance(exc, DATABASE_DOWN):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        cause = exc.orig.__cause__ if exc.orig is not None else None
        return isinstance(cause, (*_ASYNCPG_CONNECTION_ERRORS, OSError))
    return False


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not _is_connection_failure(exc):
        raise exc  # a real bug: the generic handler answers 500 and logs it
    log.warning("database.unavailable", path=request.url.path, error=type(exc).__name__)
    error = DatabaseUnavailable()
    return error_response(error.status_code, error.code, error.message, request=request)


def access_observer(service: str) -> ResponseObserver:
    """One log line and the HTTP metrics per answered request (run inside its log context)."""
    # Bound once, as structlog's performance guide advises for a logger used on every request.
    access_log = get_logger("http").bind()

    def observe(scope: Scope, status: int, seconds: float) -> None:
        observe_http(service, scope["method"], scope, status, seconds)
        access_log.info(
            "http.request",
            method=scope["method"],
            path=scope["path"],
            status=status,
            duration_ms=round(seconds * 1000, 2),
        )

    return observe


def freeze_heap(*, gen0_threshold: int) -> bool:
    """Move everything alive now out of the collector's sight; collect young objects less often."""
    # Measured on a users instance: the start-up heap (modules, schemas, route tables, pools)
    # lives as long as the process, and each full collection walked it again; frozen, the
    # instance served 35 % more cached reads, and a gen-0 threshold of 10,000 instead of 700
    # another 5 %. Garbage made after start-up is still collected.
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    return True


class ServiceApp(FastAPI):
    """FastAPI whose outermost layer keeps uvicorn from logging a 500 the handler has logged.

    ``LogUnhandledOnce`` wraps the app itself, outside every middleware, the server spans of
    OpenTelemetry's FastAPI instrumentation included (``tracecontext.instrument_app``).

    FastAPI's own telemetry stays off: the instrumentation's spans are the ones operators know,
    and both would add a second set of spans (and per-request metric lookups) to every request.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("telemetry", {"tracing": False, "metrics": False, "logs": False})
        super().__init__(**kwargs)
        self._log_once = LogUnhandledOnce(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._log_once(scope, receive, send)


def create_service_app(
    *,
    runtime: ServiceRuntime,
    title: str,
    prefix: str,
    routers: Sequence[APIRouter] = (),
    description: str = "",
    json_exempt_paths: Sequence[str] = (),
    version: str = "1.0.0",
) -> FastAPI:
    """The FastAPI app of a service: its routers under ``prefix`` plus the shared plumbing."""
    settings = runtime.settings
    configure_logging(
        service=settings.service_name, json=settings.log_json, level=settings.log_level
    )
    tracecontext.configure_tracing(settings.service_name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await runtime.start()
        frozen = settings.gc_freeze and freeze_heap(gen0_threshold=settings.gc_gen0_threshold)
        try:
            yield {}
        finally:
            if frozen:
                gc.unfreeze()
            await runtime.stop()

    app = ServiceApp(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        docs_url=None,
        openapi_url=f"{prefix}/openapi.json",
        redoc_url=None,
    )
    tracecontext.instrument_app(app)
    install_docs(app, prefix=prefix)  # before the routers: `<prefix>/{id}` would match `docs`
    app.state.runtime = runtime
    install_error_handlers(app)
    for exc_type in (*DATABASE_DOWN, DBAPIError):
        app.add_exception_handler(exc_type, _database_unavailable)
    install_middleware(
        app,
        json_exempt_paths=json_exempt_paths,
        on_response=access_observer(settings.service_name),
    )
    app.include_router(health_router(runtime.health))
    if settings.metrics_enabled:
        app.include_router(metrics_router())
    for router in routers:
        app.include_router(router)
    return app
