"""Event handlers of the users service (each runs in one transaction with its inbox row)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.bus import ReceivedEvent
from servicekit.events import UserRegistered
from users_service import service


async def handle_user_registered(event: ReceivedEvent, session: AsyncSession) -> None:
    """``user.registered`` → the user's profile (a repeat, by event or by user, does nothing)."""
    await service.create_profile(session=session, data=event.payload(UserRegistered))
