"""Event handlers of the auth service."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from auth_service import service
from auth_service.resources import AuthResources
from servicekit.bus import Handler, ReceivedEvent
from servicekit.events import UserDeleted


def user_deleted(auth: AuthResources) -> Handler:
    """``user.deleted``: forget the user's credentials and revoke every token of theirs."""

    async def handle_user_deleted(event: ReceivedEvent, session: AsyncSession) -> None:
        data = event.payload(UserDeleted)
        await service.forget_user(
            session=session,
            outbox=auth.outbox,
            user_id=data.user_id,
            access_token_ttl=auth.access_token_ttl,
        )

    return handle_user_deleted
