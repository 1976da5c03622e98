"""HTTP routes of the notifications service."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from notifications_service import service
from notifications_service.dependencies import PrincipalDep, SessionDep
from notifications_service.schemas import NotificationPage, NotificationRead
from servicekit.errors import error_responses

router = APIRouter(prefix="/notifications", tags=["notifications"])

_BAD_QUERY = {422: "Invalid limit or cursor."}


@router.get(
    "",
    response_model=NotificationPage,
    responses=error_responses(401, 422, 503, descriptions=_BAD_QUERY),
)
async def list_notifications(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size (1-100).")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> NotificationPage:
    """The caller's notifications, newest first."""
    page = await service.list_notifications(
        session=session, user_id=principal.user_id, limit=limit, cursor=cursor
    )
    return NotificationPage(
        items=[NotificationRead.model_validate(item) for item in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{notification_id}",
    response_model=NotificationRead,
    responses=error_responses(
        401, 404, 422, 503, descriptions={404: "Unknown, or not the caller's.", **_BAD_QUERY}
    ),
)
async def get_notification(
    notification_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> NotificationRead:
    """One of the caller's notifications."""
    found = await service.get_notification(
        session=session, user_id=principal.user_id, notification_id=notification_id
    )
    return NotificationRead.model_validate(found)
