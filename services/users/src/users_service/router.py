"""HTTP routes of the users service."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from servicekit.deps import PrincipalDep, RuntimeDep, SessionDep
from servicekit.errors import error_responses
from servicekit.pagination import MAX_CURSOR_LENGTH
from users_service import service
from users_service.cache import CachedProfile
from users_service.dependencies import WriteUnitDep, reader_of
from users_service.schemas import UserPage, UserRead, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])

_NO_PROFILE = {404: "No such profile (or not one the caller may see)."}


def _as_json(profile: CachedProfile) -> Response:
    # The JSON the cache already holds: FastAPI would validate and render the model again.
    return Response(profile.json, media_type="application/json")


@router.get(
    "/me",
    response_model=UserRead,
    responses=error_responses(401, 404, 503, descriptions=_NO_PROFILE),
)
async def read_me(principal: PrincipalDep, request: Request) -> Response:
    """The caller's profile (404 until the registration has been processed)."""
    profile = await service.get_own_profile(reader=reader_of(request), user_id=principal.user_id)
    return _as_json(profile)


@router.patch(
    "/me",
    responses=error_responses(
        400,
        401,
        404,
        415,
        422,
        503,
        descriptions={**_NO_PROFILE, 422: "Invalid or unknown field (only name and bio)."},
    ),
)
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


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 503, descriptions=_NO_PROFILE),
)
async def delete_me(principal: PrincipalDep, unit: WriteUnitDep, runtime: RuntimeDep) -> Response:
    """Delete the caller's profile; publishes ``user.deleted`` (their tokens stop working)."""
    await service.delete_profile(
        session=unit.session, outbox=runtime.outbox, stale=unit.stale, user_id=principal.user_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{user_id}",
    response_model=UserRead,
    responses=error_responses(401, 404, 422, 503, descriptions=_NO_PROFILE),
)
async def read_user(user_id: uuid.UUID, principal: PrincipalDep, request: Request) -> Response:
    """A profile by id: the caller's own, or any for an admin."""
    profile = await service.get_user(
        reader=reader_of(request), principal=principal, user_id=user_id
    )
    return _as_json(profile)


@router.get(
    "",
    responses=error_responses(
        401, 403, 422, 503, descriptions={403: "The caller is not an admin."}
    ),
)
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
