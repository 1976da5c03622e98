"""Every query of the users service, and the cached read path in front of them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, exists, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from users_service.cache import CachedProfile, UserCache
from users_service.models import DeletedUser, User, users
from users_service.schemas import UserRead

_LOCK_USER = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


class UserRepository:
    """The users and deleted_users tables, in the caller's session and transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_user(self, user_id: uuid.UUID) -> None:
        """Serialise with the other transactions creating or deleting the user's profile.

        A row lock cannot do it: before the profile is created there is no row to lock, and a
        creation that checked for a tombstone just before a deletion committed would bring the
        profile back.
        """
        await self.session.execute(_LOCK_USER, {"key": f"users.user:{user_id}"})

    async def get_for_update(self, user_id: uuid.UUID) -> User | None:
        """A profile by id, row-locked until the transaction ends (writes read it this way)."""
        return await self.session.scalar(select(User).where(User.id == user_id).with_for_update())

    async def add_if_absent(
        self,
        *,
        user_id: uuid.UUID,
        email: str,
        name: str,
        roles: list[str],
        created_at: datetime,
    ) -> bool:
        """Insert a profile unless one with this id exists; True when it was inserted."""
        statement = (
            insert(User)
            .values(
                id=user_id,
                email=email,
                name=name,
                roles=roles,
                created_at=created_at,
                updated_at=created_at,
            )
            .on_conflict_do_nothing(index_elements=[User.id])
            .returning(User.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def delete(self, user: User, *, deleted_at: datetime) -> None:
        """Delete a profile and remember its id, so it is never recreated."""
        await self.session.delete(user)
        await self.session.execute(
            insert(DeletedUser)
            .values(id=user.id, deleted_at=deleted_at)
            .on_conflict_do_nothing(index_elements=[DeletedUser.id])
        )
        await self.session.flush()

    async def was_deleted(self, user_id: uuid.UUID) -> bool:
        """True when a profile with this id existed and was deleted."""
        return bool(await self.session.scalar(select(exists().where(DeletedUser.id == user_id))))

    async def page(self, *, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[User]:
        """Up to ``limit`` profiles older than ``after``, newest first (keyset, no OFFSET)."""
        statement = select(User).order_by(User.created_at.desc(), User.id.desc()).limit(limit)
        if after is not None:
            statement = statement.where(tuple_(User.created_at, User.id) < tuple_(*after))
        return list(await self.session.scalars(statement))


class CachedUserReader:
    """Profiles by id: Redis first, then PostgreSQL (one read per miss), then the cache.

    Loads use a connection of their own rather than a request's session: one load serves every
    concurrent request for the key, so it must not depend on any one of them. It runs one
    prebuilt statement in autocommit, without the ORM: a session's BEGIN, SELECT and ROLLBACK
    were three round trips and about 1.1 ms of CPU per miss, this is one and about 0.4 ms.
    """

    _LOAD = select(*users.c).where(users.c.id == bindparam("user_id"))

    def __init__(self, *, cache: UserCache, engine: AsyncEngine, use_cache: bool = True) -> None:
        self.cache = cache
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.use_cache = use_cache

    async def get(self, user_id: uuid.UUID) -> CachedProfile | None:
        """The read model of a profile (and its JSON), or None when there is none."""
        if not self.use_cache:
            user = await self._from_database(user_id)
            return CachedProfile.of(user) if user is not None else None
        return await self.cache.get(user_id, self._from_database)

    async def _from_database(self, user_id: uuid.UUID) -> UserRead | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(self._LOAD, {"user_id": user_id})).first()
        return UserRead.model_validate(row) if row is not None else None
