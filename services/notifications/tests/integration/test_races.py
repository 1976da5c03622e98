"""The user projection racing the user's deletion: nothing of an erased user survives.

``user.updated``, an order email and ``user.deleted`` of one user are applied at once, each by
its real handler in a transaction of its own (as the consumers run them), staggered
differently every round.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from notifications_service.config import Settings
from notifications_service.handlers import order_handlers, user_handlers
from notifications_service.models import ErasedUser, Notification, UserContact
from notifications_service.rendering import EmailRenderer
from servicekit.db import session_factory
from servicekit.events import OrderConfirmed, UserDeleted, UserRegistered, UserUpdated
from servicekit.testing.consuming import deliver

ROUNDS = 30


class TestProjectionRacingTheDeletion:
    async def test_updates_and_order_emails_during_user_deleted_leave_nothing_behind(
        self, settings: Settings, engine: AsyncEngine
    ) -> None:
        sessions = session_factory(engine)
        renderer = EmailRenderer()
        users = user_handlers(settings=settings, renderer=renderer)
        orders = order_handlers(settings=settings, renderer=renderer)
        for _ in range(ROUNDS):
            user_id = uuid.uuid4()
            now = datetime.now(UTC)
            await deliver(
                sessions,
                users["user.registered"],
                UserRegistered(
                    user_id=user_id,
                    email=f"{user_id.hex}@example.com",
                    name="Racer",
                    roles=[],
                    registered_at=now,
                ),
                producer="auth",
            )
            updated = UserUpdated(
                user_id=user_id,
                email=f"new-{user_id.hex}@example.com",
                name="Racer",
                bio=None,
                updated_at=datetime.now(UTC),
            )
            confirmed = OrderConfirmed(
                order_id=uuid.uuid4(),
                user_id=user_id,
                total_amount=Decimal("12.50"),
                currency="USD",
                payment_id=uuid.uuid4(),
            )
            deleted = UserDeleted(user_id=user_id, deleted_at=datetime.now(UTC))
            await asyncio.gather(
                deliver(
                    sessions, users["user.updated"], updated, producer="users", after=_jitter()
                ),
                deliver(
                    sessions,
                    orders["order.confirmed"],
                    confirmed,
                    producer="orders",
                    after=_jitter(),
                ),
                deliver(
                    sessions, users["user.deleted"], deleted, producer="users", after=_jitter()
                ),
            )
            async with sessions() as session:
                contacts = await session.scalar(
                    select(func.count())
                    .select_from(UserContact)
                    .where(UserContact.user_id == user_id)
                )
                erased = await session.scalar(
                    select(func.count())
                    .select_from(ErasedUser)
                    .where(ErasedUser.user_id == user_id)
                )
                notifications = await session.scalar(
                    select(func.count())
                    .select_from(Notification)
                    .where(Notification.user_id == user_id)
                )
            assert (contacts, erased, notifications) == (0, 1, 0)


def _jitter() -> float:
    return random.uniform(0, 0.01)
