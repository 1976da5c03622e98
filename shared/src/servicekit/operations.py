"""Operator actions on a service's queues and outbox, behind ``python -m <service>.cli``.

Dead-lettered messages are inspected by taking them without ack and closing the channel, which
puts them back; re-driving publishes a message to its queue (confirmed, and ``mandatory``: a
queue that does not exist returns the message instead of confirming it into nowhere) with a
fresh attempt count and only then acks it in the DLQ, so a crash in between leaves a duplicate
the inbox absorbs, never a loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from servicekit.amqp import connect_first
from servicekit.bus import (
    HEADER_ATTEMPT,
    HEADER_DEFERRALS,
    HEADER_FAILED_QUEUE,
    HEADER_REASON,
)
from servicekit.db import asyncpg_dsn


@dataclass(frozen=True)
class ParkedMessage:
    """A message in a DLQ, as an operator sees it."""

    message_id: str
    event_type: str
    reason: str
    attempts: int
    routing_key: str
    body: bytes
    headers: dict[str, Any]

    def summary(self) -> str:
        """One line: id, type, attempts, reason."""
        return f"{self.message_id}  {self.event_type}  attempts={self.attempts}  {self.reason}"


def _parked(message: AbstractIncomingMessage) -> ParkedMessage:
    headers = dict(message.headers or {})
    return ParkedMessage(
        message_id=str(message.message_id or ""),
        event_type=str(message.type or "?"),
        reason=_text(headers.get(HEADER_REASON)),
        attempts=_int(headers.get(HEADER_ATTEMPT)),
        routing_key=_text(headers.get("x-original-routing-key")),
        body=message.body,
        headers=headers,
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


async def _each_parked(
    amqp_url: str,
    queue: str,
    act: Callable[[AbstractIncomingMessage, aio_pika.abc.AbstractChannel], Any] | None = None,
    *,
    select: Callable[[ParkedMessage], bool] = lambda _: True,
) -> list[ParkedMessage]:
    """Visit every message of ``<queue>.dlq``; ``act`` settles the selected ones."""
    connection = await connect_first(amqp_url)
    found: list[ParkedMessage] = []
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            dlq = await channel.get_queue(f"{queue}.dlq", ensure=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise LookupError(f"there is no queue {queue}.dlq") from None
        while (message := await dlq.get(no_ack=False, fail=False)) is not None:
            parked = _parked(message)
            if select(parked):
                found.append(parked)
                if act is not None:
                    await act(message, channel)
        # Closing the channel returns every message that was not settled to the DLQ.
        await channel.close()
    return found


async def list_parked(amqp_url: str, queue: str) -> list[ParkedMessage]:
    """Every message parked for ``queue``, left in place."""
    return await _each_parked(amqp_url, queue)


async def redrive(amqp_url: str, queue: str, message_id: str | None = None) -> list[ParkedMessage]:
    """Put parked messages (one, or all) back on ``queue`` with a fresh attempt count."""

    async def back_to_queue(
        message: AbstractIncomingMessage, channel: aio_pika.abc.AbstractChannel
    ) -> None:
        headers = {
            k: v
            for k, v in (message.headers or {}).items()
            if k not in (HEADER_REASON, HEADER_FAILED_QUEUE, HEADER_DEFERRALS)
        }
        headers[HEADER_ATTEMPT] = 1
        headers["x-redriven-at"] = datetime.now(UTC).isoformat()
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                message_id=message.message_id,
                type=message.type,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=headers,
                correlation_id=message.correlation_id,
            ),
            routing_key=queue,
            mandatory=True,
        )
        await message.ack()

    return await _each_parked(amqp_url, queue, back_to_queue, select=_by_id(message_id))


async def purge(amqp_url: str, queue: str, message_id: str | None = None) -> list[ParkedMessage]:
    """Drop parked messages (one, or all) for good."""

    async def drop(message: AbstractIncomingMessage, _: aio_pika.abc.AbstractChannel) -> None:
        await message.ack()

    return await _each_parked(amqp_url, queue, drop, select=_by_id(message_id))


def _by_id(message_id: str | None) -> Callable[[ParkedMessage], bool]:
    return lambda parked: message_id is None or parked.message_id == message_id


def header_text(value: Any) -> Any:
    """A header value fit for JSON output."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


async def outbox_backlog(database_url: str, table: str = "outbox") -> tuple[int, float]:
    """(pending rows, age in seconds of the oldest) of a service's outbox."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(created_at)) AS age "  # noqa: S608
            f"FROM {table} WHERE published_at IS NULL"
        )
    finally:
        await conn.close()
    return int(row["n"]), float(row["age"] or 0.0)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
