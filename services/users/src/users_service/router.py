"""HTTP routes of the users service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from servicekit.deps import PrincipalDep, RuntimeDep, SessionDep
from users_service import service
from users_service.dependencies import ReaderDep, WriteUnitDep
from users_service.pagination import MAX_CURSOR_LENGTH
from users_service.schemas import UserPage, UserRead, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid, expired or revoked access token."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"description": "No such profile (or not one the caller may see)."},
}


@router.get("/me", responses=_NOT_FOUND)
async def read_me(principal: PrincipalDep, reader: ReaderDep) -> UserRead:
    """The caller's profile (404 until the registration has been processed)."""
    return await service.get_own_profile(reader=reader, user_id=principal.user_id)


@router.patch("/me", responses={**_NOT_FOUND, 422: {"description": "Invalid or unknown field."}})
async def update_me(
    principal: PrincipalDep, changes: UserUpdate, unit: WriteUnitDep, runtime: RuntimeDep
) -> UserRead:
    """Change the caller's name and/or bio; publishes ``user.updated``."""
    return await service.update_profile(
        session=unit.session,
        outbox=runtime.outbox,
        stale=unit.stale,
        user_id=principal.user_id,
        changes=changes,
    )


@router.delete("/me", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
async def delete_me(principal: PrincipalDep, unit: WriteUnitDep, runtime: RuntimeDep) -> Response:
    """Delete the caller's profile; publishes ``user.deleted`` (their tokens stop working)."""
    await service.delete_profile(
        session=unit.session, outbox=runtime.outbox, stale=unit.stale, user_id=principal.user_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{user_id}", responses=_NOT_FOUND)
async def read_user(user_id: uuid.UUID, principal: PrincipalDep, reader: ReaderDep) -> UserRead:
    """A profile by id: the caller's own, or any for an admin."""
    return await service.get_user(reader=reader, principal=principal, user_id=user_id)


@router.get("", responses={**_ERRORS, 403: {"description": "The caller is not an admin."}})
async def list_users(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1–100.")] = 20,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page."),
    ] = None,
) -> UserPage:
    """Every profile, newest first, one page at a time (admins only)."""
    return await service.list_users(
        session=session, principal=principal, limit=limit, cursor=cursor
    )
