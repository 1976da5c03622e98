"""The rules of the users service; queries live in the repository, commits in the caller."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.events import UserDeleted, UserRegistered, UserUpdated
from servicekit.logging import get_logger
from servicekit.outbox import Outbox
from servicekit.pagination import decode_cursor, encode_cursor
from servicekit.security import Principal
from users_service.cache import CachedProfile, PendingInvalidations
from users_service.errors import AdminOnly, ProfileNotFound, UserNotFound
from users_service.models import EMAIL_MAX, NAME_MAX
from users_service.repository import CachedUserReader, UserRepository
from users_service.schemas import UserPage, UserRead, UserUpdate

log = get_logger(__name__)


async def create_profile(*, session: AsyncSession, data: UserRegistered) -> bool:
    """Create the profile of a newly registered user; False when it exists or was deleted."""
    repository = UserRepository(session)
    await repository.lock_user(data.user_id)
    if await repository.was_deleted(data.user_id):
        log.info("profile.registration_ignored", user_id=str(data.user_id), reason="deleted")
        return False
    # Auth validates names; clip anyway so one odd event cannot block the queue forever.
    name = data.name.strip()[:NAME_MAX] or data.email.split("@", 1)[0][:NAME_MAX] or "user"
    created = await repository.add_if_absent(
        user_id=data.user_id,
        email=data.email[:EMAIL_MAX],
        name=name,
        roles=sorted(set(data.roles)),
        created_at=data.registered_at,
    )
    if created:
        log.info("profile.created", user_id=str(data.user_id))
    else:
        log.info("profile.registration_ignored", user_id=str(data.user_id), reason="exists")
    return created


async def get_own_profile(*, reader: CachedUserReader, user_id: uuid.UUID) -> CachedProfile:
    """The caller's own profile."""
    profile = await reader.get(user_id)
    if profile is None:
        raise ProfileNotFound()
    return profile


async def get_user(
    *, reader: CachedUserReader, principal: Principal, user_id: uuid.UUID
) -> CachedProfile:
    """A profile the caller may see: their own, or any for an admin (else 404, never 403)."""
    if user_id != principal.user_id and not principal.is_admin:
        raise UserNotFound()
    profile = await reader.get(user_id)
    if profile is None:
        raise UserNotFound()
    return profile


async def list_users(
    *, session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> UserPage:
    """A page of every profile, newest first (admins only)."""
    if not principal.is_admin:
        raise AdminOnly()
    after = decode_cursor(cursor) if cursor is not None else None
    rows = await UserRepository(session).page(after=after, limit=limit + 1)
    items = [UserRead.model_validate(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return UserPage(items=items, next_cursor=next_cursor)


async def update_profile(
    *,
    session: AsyncSession,
    outbox: Outbox,
    stale: PendingInvalidations,
    user_id: uuid.UUID,
    changes: UserUpdate,
) -> UserRead:
    """Apply the caller's changes and record ``user.updated``; a no-op changes nothing."""
    user = await UserRepository(session).get_for_update(user_id)
    if user is None:
        raise ProfileNotFound()
    changed = {
        field: value
        for field, value in changes.model_dump(exclude_unset=True).items()
        if getattr(user, field) != value
    }
    if not changed:
        return UserRead.model_validate(user)
    for field, value in changed.items():
        setattr(user, field, value)
    user.updated_at = datetime.now(UTC)
    await session.flush()
    await outbox.add(
        session,
        UserUpdated(
            user_id=user.id,
            email=user.email,
            name=user.name,
            bio=user.bio,
            updated_at=user.updated_at,
        ),
    )
    stale.add(user.id)
    log.info("profile.updated", user_id=str(user.id), fields=sorted(changed))
    return UserRead.model_validate(user)


async def delete_profile(
    *,
    session: AsyncSession,
    outbox: Outbox,
    stale: PendingInvalidations,
    user_id: uuid.UUID,
) -> None:
    """Delete the caller's profile and record ``user.deleted`` (every service acts on it)."""
    repository = UserRepository(session)
    await repository.lock_user(user_id)
    user = await repository.get_for_update(user_id)
    if user is None:
        raise ProfileNotFound()
    deleted_at = datetime.now(UTC)
    await repository.delete(user, deleted_at=deleted_at)
    await outbox.add(session, UserDeleted(user_id=user_id, deleted_at=deleted_at))
    stale.add(user_id)
    log.info("profile.deleted", user_id=str(user_id))
