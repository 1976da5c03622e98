"""Helpers of the notifications integration tests: the running service (Shop), new addresses."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from notifications_service.config import Settings
from servicekit.bus import EventBus
from servicekit.events import (
    EventData,
    EventEnvelope,
    OrderConfirmed,
    UserRegistered,
    new_envelope,
)
from servicekit.testing.tokens import TokenMinter
from servicekit.testing.waiting import wait_until
from svctools.smtp_sink import ReceivedMessage, read_messages  # type: ignore[import-untyped]

PRODUCERS = {"user": "auth", "order": "orders", "payment": "payments-gateway"}


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:16]}@example.com"


@dataclass
class Shop:
    """The notifications service running in-process, and ways to poke and observe it."""

    client: httpx.AsyncClient
    bus: EventBus
    settings: Settings
    tokens: TokenMinter
    engine: AsyncEngine
    maildir: Path

    async def publish(
        self, data: EventData, envelope: EventEnvelope | None = None
    ) -> EventEnvelope:
        """Publish an event as its producing service would (or re-publish ``envelope``)."""
        if envelope is None:
            producer = PRODUCERS[data.event_type.split(".")[0]]
            envelope = new_envelope(data, producer=producer)
        await self.bus.publish(envelope)
        return envelope

    async def register(
        self, *, name: str = "Ada Lovelace", email: str | None = None
    ) -> tuple[uuid.UUID, str]:
        """Publish `user.registered` for a new user; returns their id and email."""
        user_id, email = uuid.uuid4(), email or new_email()
        await self.publish(
            UserRegistered(user_id=user_id, email=email, name=name, registered_at=datetime.now(UTC))
        )
        return user_id, email

    async def confirm_order(
        self, user_id: uuid.UUID, *, total: str = "42.50", currency: str = "EUR"
    ) -> EventEnvelope:
        """Publish `order.confirmed` for a new order of the user."""
        return await self.publish(
            OrderConfirmed(
                order_id=uuid.uuid4(),
                user_id=user_id,
                total_amount=Decimal(total),
                currency=currency,
                payment_id=uuid.uuid4(),
            )
        )

    def headers(self, user_id: uuid.UUID) -> dict[str, str]:
        return self.tokens.headers(user_id)

    async def mails(self, to: str, subject: str | None = None) -> list[ReceivedMessage]:
        """Messages the sink received for ``to`` (whose subject contains ``subject``)."""
        received = await asyncio.to_thread(read_messages, self.maildir)
        return [
            m for m in received if to in m.rcpt_tos and (subject is None or subject in m.subject)
        ]

    async def wait_for_mail(
        self, to: str, subject: str | None = None, *, timeout: float = 10.0
    ) -> ReceivedMessage:
        """The first message for ``to`` (with ``subject`` in its subject)."""
        found = await wait_until(
            lambda: self.mails(to, subject), timeout=timeout, what=f"mail to {to} ({subject})"
        )
        return found[0]

    async def notifications(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        """The user's notifications as the API lists them."""
        response = await self.client.get(
            "/notifications", params={"limit": 100}, headers=self.headers(user_id)
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def wait_for_notification(
        self,
        user_id: uuid.UUID,
        *,
        template: str,
        status: str,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The user's notification of ``template`` once it has ``status``."""

        async def probe() -> dict[str, Any] | None:
            for item in await self.notifications(user_id):
                if item["template"] == template and item["status"] == status:
                    return item
            return None

        return await wait_until(probe, timeout=timeout, what=f"{template} to be {status}")

    async def wait_processed(self, envelope: EventEnvelope, *, timeout: float = 10.0) -> None:
        """Wait until this service's consumer applied the event (its inbox row exists)."""
        purpose = "users" if envelope.type.startswith("user.") else "orders"
        consumer = f"{self.settings.events_exchange}.notifications.{purpose}"

        async def probe() -> bool:
            async with self.engine.connect() as conn:
                found = await conn.scalar(
                    text(
                        "SELECT count(*) FROM inbox WHERE consumer = :consumer AND message_id = :id"
                    ),
                    {"consumer": consumer, "id": envelope.id},
                )
            return bool(found)

        await wait_until(probe, timeout=timeout, what=f"{envelope.type} to be processed")

    async def count_rows(self, table: str, user_id: uuid.UUID) -> int:
        """Rows of ``table`` that belong to the user."""
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                text(f"SELECT count(*) FROM {table} WHERE user_id = :user_id"),  # noqa: S608
                {"user_id": user_id},
            )
        return int(count or 0)


StartShop = Callable[..., Awaitable[Shop]]
