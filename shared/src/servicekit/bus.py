"""The event bus on RabbitMQ: one durable topic exchange, a confirming publisher, consumers.

Publishing: persistent messages, publisher confirms, ``mandatory`` with returns raising, so a
message no queue is bound for is an error rather than a silent confirm.

Consuming (see ``Consumer``): a durable quorum queue per service and purpose, manual ack after the
handler's transaction commits, bounded prefetch and concurrency, an inbox row per message in that
same transaction, retries through quorum delay queues with growing delays, and a parking
(dead-letter) queue with the reason. A malformed message is parked at once and never blocks the
queue. Every queue is a quorum queue and every dead-lettering is at-least-once, so no hop drops a
message when the broker restarts (``docs/delivery.md`` has the table of hops).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import DeliveryError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit import tracecontext
from servicekit.amqp import broker_urls, connect_failover
from servicekit.events import (
    EventData,
    EventEnvelope,
    MalformedEventError,
    UnknownEventError,
    current_event,
    parse_envelope,
)
from servicekit.inbox import record_receipt

log = structlog.get_logger("servicekit.bus")

T = TypeVar("T", bound=EventData)

HEADER_ATTEMPT = "x-attempt"
HEADER_CORRELATION = "x-correlation-id"
HEADER_TRACEPARENT = "traceparent"
HEADER_REASON = "x-death-reason"
HEADER_FAILED_QUEUE = "x-failed-queue"
HEADER_ORIGINAL_ROUTING_KEY = "x-original-routing-key"
HEADER_DEFERRALS = "x-deferrals"

# Quorum queue arguments every queue of a consumer carries. "at-least-once" dead-lettering keeps
# a message in its source queue until the target queue confirmed it; it needs reject-publish
# overflow (with drop-head RabbitMQ falls back to at-most-once).
AT_LEAST_ONCE_DEAD_LETTERING: dict[str, Any] = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True)
class QueueSettings:
    """How a consumer's quorum queues are declared.

    ``initial_group_size`` is the number of replicas a new queue gets; RabbitMQ places it on as
    many cluster members as there are, up to that number, so 3 also works on a single node.
    ``delivery_limit`` bounds the redeliveries of one message (a message that crashes its
    consumer every time); past it the message is dead-lettered to the DLQ, never dropped.
    """

    initial_group_size: int = 3
    delivery_limit: int = 20

    def quorum_arguments(self) -> dict[str, Any]:
        """The arguments of every quorum queue a consumer declares."""
        return {
            "x-queue-type": "quorum",
            "x-quorum-initial-group-size": self.initial_group_size,
        }


class UnroutableError(RuntimeError):
    """The broker returned a message: no queue is bound for its routing key."""


class RetryLater(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a handler to have the message redelivered after ``delay`` seconds.

    Unlike a failure it does not count towards the attempt limit: the handler owns the deadline
    (for example a payment that waits for the provider to come back).
    """

    def __init__(self, delay: float, reason: str = "deferred") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


@dataclass(frozen=True)
class ReceivedEvent:
    """What a handler receives: the envelope, its typed payload and delivery facts."""

    envelope: EventEnvelope
    data: EventData
    attempt: int
    deferrals: int
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)

    def payload(self, model: type[T]) -> T:
        """The payload as the model the handler expects."""
        if not isinstance(self.data, model):
            raise TypeError(f"{self.envelope.type} payload is not a {model.__name__}")
        return self.data


Handler = Callable[[ReceivedEvent, AsyncSession], Awaitable[None]]


class ConsumerObserver(Protocol):
    """Hooks for metrics and tracing; every method is optional to act on."""

    def on_handled(self, queue: str, event_type: str, seconds: float) -> None: ...
    def on_duplicate(self, queue: str, event_type: str) -> None: ...
    def on_retry(self, queue: str, event_type: str, reason: str) -> None: ...
    def on_dead_letter(self, queue: str, event_type: str, reason: str) -> None: ...


class EventBus:
    """One robust AMQP connection per process, a confirming publish channel and consumers."""

    def __init__(self, *, url: str | Sequence[str], exchange: str, service: str) -> None:
        self.urls = broker_urls(url)  # one node, or the nodes of a cluster to fail over between
        self.exchange_name = exchange
        self.service = service
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumers: list[Consumer] = []
        self.declared_queues: set[str] = set()

    async def connect(self) -> None:
        """Open the connection and declare the exchange; reconnects by itself afterwards.

        With several addresses a lost node is left for the next one; the channels, the queues
        and the consumers are restored there.
        """
        tracecontext.configure_tracing(self.service)  # so every message carries a traceparent
        self._connection = await connect_failover(
            self.urls,
            client_properties={
                "connection_name": f"{self.service}@{self.exchange_name}:{uuid.uuid4().hex[:8]}"
            },
        )
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await self._channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("EventBus.connect() was not called")
        return self._connection

    @property
    def is_connected(self) -> bool:
        """True while the AMQP connection is open (False during a reconnect)."""
        conn = self._connection
        return conn is not None and not conn.is_closed and conn.connected.is_set()

    def queue_name(self, purpose: str) -> str:
        """The name of this service's queue for a purpose, scoped by the exchange."""
        return f"{self.exchange_name}.{self.service}.{purpose}"

    async def publish(self, envelope: EventEnvelope, *, traceparent: str | None = None) -> None:
        """Publish one event and wait for the broker's confirm."""
        headers = {HEADER_CORRELATION: envelope.correlation_id}
        if traceparent:
            headers[HEADER_TRACEPARENT] = traceparent
        await self.publish_raw(
            envelope.to_json(),
            routing_key=envelope.type,
            message_id=str(envelope.id),
            event_type=envelope.type,
            headers=headers,
            correlation_id=envelope.correlation_id,
        )

    async def publish_raw(
        self,
        body: bytes,
        *,
        routing_key: str,
        message_id: str,
        event_type: str,
        headers: Mapping[str, Any],
        correlation_id: str | None = None,
    ) -> None:
        """Publish a serialised envelope; raises UnroutableError when no queue takes it."""
        if self._exchange is None:
            raise RuntimeError("EventBus.connect() was not called")
        sent_headers = dict(headers)
        with tracecontext.producer_span(
            event_type, destination=self.exchange_name, message_id=message_id, headers=sent_headers
        ):
            message = aio_pika.Message(
                body,
                message_id=message_id,
                type=event_type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=sent_headers,
                correlation_id=correlation_id,
                timestamp=time.time(),
                app_id=self.service,
            )
            try:
                await self._exchange.publish(message, routing_key=routing_key, mandatory=True)
            except DeliveryError as exc:
                raise UnroutableError(
                    f"no queue is bound to {self.exchange_name!r} for routing key {routing_key!r}"
                ) from exc

    def consumer(
        self,
        purpose: str,
        *,
        handlers: Mapping[str, Handler],
        session_factory: async_sessionmaker[AsyncSession],
        inbox: Table,
        retry_delays_ms: Sequence[int] = (1000, 5000, 30000, 120000),
        max_attempts: int | None = None,
        prefetch: int = 32,
        concurrency: int | None = None,
        observers: Sequence[ConsumerObserver] = (),
        queues: QueueSettings | None = None,
        is_unavailable: Callable[[BaseException], bool] | None = None,
    ) -> Consumer:
        """Describe a consumer of this service; ``start()`` it in the lifespan.

        ``is_unavailable`` tells a dependency that could not be reached (the database refusing
        connections) from a failure of the handler: such a message is redelivered later without
        counting an attempt, so an outage never parks it.
        """
        consumer = Consumer(
            self,
            queue=self.queue_name(purpose),
            handlers=handlers,
            session_factory=session_factory,
            inbox=inbox,
            retry_delays_ms=retry_delays_ms,
            max_attempts=max_attempts,
            prefetch=prefetch,
            concurrency=concurrency,
            observers=observers,
            queues=queues or QueueSettings(),
            is_unavailable=is_unavailable,
        )
        self._consumers.append(consumer)
        return consumer

    async def stop_consuming(self) -> None:
        """Stop every consumer: no new deliveries, in-flight handlers finish."""
        await asyncio.gather(*(c.stop() for c in self._consumers))

    async def close(self) -> None:
        """Stop consumers and close the connection."""
        await self.stop_consuming()
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
        self._connection = None
        self._exchange = None
        self._channel = None


class Consumer:
    """Consumes one queue, dispatching each event type to its handler exactly once."""

    def __init__(
        self,
        bus: EventBus,
        *,
        queue: str,
        handlers: Mapping[str, Handler],
        session_factory: async_sessionmaker[AsyncSession],
        inbox: Table,
        retry_delays_ms: Sequence[int],
        max_attempts: int | None,
        prefetch: int,
        concurrency: int | None,
        observers: Sequence[ConsumerObserver],
        queues: QueueSettings | None = None,
        is_unavailable: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("a consumer needs at least one handler")
        if not retry_delays_ms:
            raise ValueError("retry_delays_ms must name at least one delay")
        self.bus = bus
        self.queue_name = queue
        self.handlers = dict(handlers)
        self.session_factory = session_factory
        self.inbox = inbox
        self.retry_delays_ms = sorted(retry_delays_ms)
        self.max_attempts = max_attempts or len(self.retry_delays_ms) + 1
        self.prefetch = prefetch
        self._slots = asyncio.Semaphore(concurrency or prefetch)
        self.observers = list(observers)
        self.queues = queues or QueueSettings()
        self.is_unavailable = is_unavailable or (lambda _: False)
        self.dlq_name = f"{queue}.dlq"
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def retry_queue_name(self, delay_ms: int) -> str:
        """The delay queue that holds messages waiting ``delay_ms`` before their next attempt.

        Named ``.delay.`` rather than the ``.retry.`` of the classic TTL queues of earlier
        versions: a queue cannot change its type or arguments in place (redeclaring it fails
        with PRECONDITION_FAILED), so the quorum delay queues are new queues beside the old.
        """
        return f"{self.queue_name}.delay.{delay_ms}ms"

    def queue_arguments(self) -> dict[str, dict[str, Any]]:
        """Every queue this consumer declares, with its arguments (main, DLQ, delay tiers)."""
        quorum = self.queues.quorum_arguments()
        declared = {
            # A message redelivered past the limit (it kills its consumer every time) is
            # dead-lettered to the DLQ, at-least-once.
            self.queue_name: {
                **quorum,
                **AT_LEAST_ONCE_DEAD_LETTERING,
                "x-delivery-limit": self.queues.delivery_limit,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.dlq_name,
            },
            self.dlq_name: dict(quorum),
        }
        for delay in self.retry_delays_ms:
            # Expired messages go back to the main queue through the default exchange, and stay
            # in the delay queue until the main queue has confirmed them (broker restart,
            # leader change, main queue not ready: they wait, they are not dropped).
            declared[self.retry_queue_name(delay)] = {
                **quorum,
                **AT_LEAST_ONCE_DEAD_LETTERING,
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.queue_name,
            }
        return declared

    async def start(self) -> None:
        """Declare the queues and bindings, then start consuming."""
        channel = await self.bus.connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await channel.declare_exchange(
            self.bus.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        declared: dict[str, AbstractQueue] = {}
        for name, arguments in self.queue_arguments().items():
            try:
                declared[name] = await channel.declare_queue(
                    name, durable=True, arguments=arguments
                )
            except aio_pika.exceptions.ChannelPreconditionFailed:
                log.error(
                    "consumer.queue_arguments_differ",
                    queue=name,
                    hint="declared by an earlier version with other arguments: "
                    "see docs/delivery.md, upgrading the queues",
                )
                raise
        queue = declared[self.queue_name]
        for routing_key in sorted(self.handlers):
            await queue.bind(exchange, routing_key=routing_key)
        self.bus.declared_queues.update(declared)
        self._channel = channel
        self._queue = queue
        self._tag = await queue.consume(self._on_message)
        log.info("consumer.started", queue=self.queue_name, routing_keys=sorted(self.handlers))

    async def stop(self, grace: float = 20.0) -> None:
        """Cancel the subscription and wait for in-flight handlers to finish."""
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception as exc:  # the channel may already be gone
                log.warning("consumer.cancel_failed", queue=self.queue_name, error=str(exc))
            self._tag = None
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        if self._channel is not None and not self._channel.is_closed:
            try:
                async with asyncio.timeout(5):
                    await self._channel.close()
            except Exception as exc:  # a broker that does not answer: the connection closes it
                log.warning("consumer.close_failed", queue=self.queue_name, error=str(exc))
        self._channel = None

    @property
    def consuming(self) -> bool:
        return self._tag is not None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            async with self._slots:
                await self._process(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        attempt = _int_header(headers.get(HEADER_ATTEMPT), 1)
        deferrals = _int_header(headers.get(HEADER_DEFERRALS), 0)
        try:
            envelope, data = parse_envelope(message.body)
        except (MalformedEventError, UnknownEventError) as exc:
            await self._park(message, headers, attempt, reason=f"malformed: {exc}")
            return
        handler = self.handlers.get(envelope.type)
        if handler is None:
            await self._park(message, headers, attempt, reason=f"no handler for {envelope.type}")
            return

        event = ReceivedEvent(
            envelope=envelope,
            data=data,
            attempt=attempt,
            deferrals=deferrals,
            routing_key=message.routing_key or envelope.type,
            headers=headers,
        )
        bound = structlog.contextvars.bind_contextvars(
            correlation_id=envelope.correlation_id,
            event_id=str(envelope.id),
            event_type=envelope.type,
        )
        event_token = current_event.set(envelope)
        started = time.perf_counter()
        try:
            with tracecontext.consumer_span(
                envelope.type, queue=self.queue_name, message_id=str(envelope.id), headers=headers
            ):
                applied = await self._apply(event, handler)
        except RetryLater as deferral:
            await self._defer(message, headers, attempt, deferrals, deferral)
            return
        except Exception as exc:
            if self.is_unavailable(exc):
                delays = self.retry_delays_ms
                wait = delays[min(deferrals, len(delays) - 1)] / 1000
                log.warning(
                    "event.dependency_unavailable", queue=self.queue_name, error=_reason(exc)
                )
                await self._defer(
                    message, headers, attempt, deferrals, RetryLater(wait, "dependency unavailable")
                )
                return
            log.warning(
                "event.handler_failed",
                queue=self.queue_name,
                attempt=attempt,
                error=f"{type(exc).__name__}: {exc}",
            )
            await self._retry_or_park(message, headers, attempt, reason=_reason(exc))
            return
        finally:
            current_event.reset(event_token)
            structlog.contextvars.reset_contextvars(**bound)
        elapsed = time.perf_counter() - started
        for observer in self.observers:
            if applied:
                observer.on_handled(self.queue_name, envelope.type, elapsed)
            else:
                observer.on_duplicate(self.queue_name, envelope.type)
        await self._ack(message)

    async def _apply(self, event: ReceivedEvent, handler: Handler) -> bool:
        """Run the handler and the inbox write in one transaction; False for a duplicate."""
        async with self.session_factory() as session, session.begin():
            first_time = await record_receipt(
                session, self.inbox, consumer=self.queue_name, message_id=event.envelope.id
            )
            if not first_time:
                log.info("event.duplicate_ignored", queue=self.queue_name)
                return False
            await handler(event, session)
        log.info("event.handled", queue=self.queue_name, attempt=event.attempt)
        return True

    async def _defer(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        attempt: int,
        deferrals: int,
        deferral: RetryLater,
    ) -> None:
        delay_ms = int(deferral.delay * 1000)
        tier = next((d for d in self.retry_delays_ms if d >= delay_ms), self.retry_delays_ms[-1])
        new_headers = {**headers, HEADER_ATTEMPT: attempt, HEADER_DEFERRALS: deferrals + 1}
        new_headers[HEADER_REASON] = deferral.reason
        for observer in self.observers:
            observer.on_retry(self.queue_name, message.type or "?", deferral.reason)
        await self._forward(message, self.retry_queue_name(tier), new_headers)

    async def _retry_or_park(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], attempt: int, reason: str
    ) -> None:
        if attempt >= self.max_attempts:
            await self._park(message, headers, attempt, reason=f"failed {attempt} times: {reason}")
            return
        delay = self.retry_delays_ms[min(attempt - 1, len(self.retry_delays_ms) - 1)]
        new_headers = {**headers, HEADER_ATTEMPT: attempt + 1, HEADER_REASON: reason}
        for observer in self.observers:
            observer.on_retry(self.queue_name, message.type or "?", reason)
        await self._forward(message, self.retry_queue_name(delay), new_headers)

    async def _park(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], attempt: int, reason: str
    ) -> None:
        log.error("event.dead_lettered", queue=self.queue_name, reason=reason, attempts=attempt)
        new_headers = {
            **headers,
            HEADER_ATTEMPT: attempt,
            HEADER_REASON: reason[:1000],
            HEADER_FAILED_QUEUE: self.queue_name,
            HEADER_ORIGINAL_ROUTING_KEY: message.routing_key or "",
        }
        for observer in self.observers:
            observer.on_dead_letter(self.queue_name, message.type or "?", reason)
        await self._forward(message, self.dlq_name, new_headers)

    async def _forward(
        self, message: AbstractIncomingMessage, queue: str, headers: dict[str, Any]
    ) -> None:
        """Copy the message to another queue (confirmed), then ack the original.

        A crash between the two leaves a duplicate, never a loss; the inbox absorbs duplicates.
        """
        channel = self._channel
        if channel is None or channel.is_closed:
            return  # unacked: the broker redelivers it
        copy = aio_pika.Message(
            message.body,
            message_id=message.message_id,
            type=message.type,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
            app_id=message.app_id,
        )
        try:
            # mandatory: a queue that is missing (deleted by hand) fails the forward instead of
            # being confirmed and dropped, and the original goes back to its queue.
            await channel.default_exchange.publish(copy, routing_key=queue, mandatory=True)
        except Exception as exc:
            log.warning("event.forward_failed", queue=queue, error=str(exc))
            await self._nack(message)
            return
        await self._ack(message)

    async def _ack(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.ack()
        except Exception as exc:
            # The channel died after the commit: the broker redelivers, the inbox drops it.
            log.warning("event.ack_failed", queue=self.queue_name, error=str(exc))

    async def _nack(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.nack(requeue=True)
        except Exception as exc:
            log.warning("event.nack_failed", queue=self.queue_name, error=str(exc))


def _int_header(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
