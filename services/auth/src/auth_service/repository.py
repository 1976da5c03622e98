"""Every query of the auth service."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.errors import EmailAlreadyRegistered
from auth_service.models import Credential, RefreshFamily, RefreshToken


class CredentialRepository:
    """Users' credentials."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> Credential | None:
        """The credential of a user id."""
        return await self.session.get(Credential, user_id)

    async def get_by_email(self, email: str) -> Credential | None:
        """The credential of a (normalised) email."""
        result = await self.session.execute(select(Credential).where(Credential.email == email))
        return result.scalar_one_or_none()

    async def hold(self, user_id: uuid.UUID) -> Credential | None:
        """The credential, key-share locked until the transaction ends; None if it is gone.

        The lock lets logins of one user run side by side but makes a deletion of the
        credential wait for this transaction, so what it adds for the user is deleted with it.
        """
        return await self.session.scalar(
            select(Credential)
            .where(Credential.id == user_id)
            .with_for_update(read=True, key_share=True)
            .execution_options(populate_existing=True)
        )

    async def email_exists(self, email: str) -> bool:
        """Whether an account uses the email."""
        result = await self.session.execute(select(Credential.id).where(Credential.email == email))
        return result.first() is not None

    async def add(self, credential: Credential) -> None:
        """Insert; a taken email (even by a concurrent registration) raises 409."""
        self.session.add(credential)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            if "uq_credentials_email" in str(exc.orig):
                raise EmailAlreadyRegistered() from None
            raise

    async def delete(self, user_id: uuid.UUID) -> bool:
        """Delete a user's credential (their refresh tokens go with it); False if absent."""
        result = await self.session.execute(
            delete(Credential).where(Credential.id == user_id).returning(Credential.id)
        )
        return result.first() is not None


class RefreshTokenRepository:
    """Refresh-token families (sessions) and their tokens."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_family(self, family: RefreshFamily) -> None:
        """Insert a family."""
        self.session.add(family)
        await self.session.flush()

    async def add_token(self, token: RefreshToken) -> None:
        """Insert a token."""
        self.session.add(token)
        await self.session.flush()

    async def find_for_update(self, token_hash: bytes) -> tuple[RefreshToken, RefreshFamily] | None:
        """The token with this hash and its family, both locked until the transaction ends.

        None when the token is unknown or its account is being deleted. The rows are locked in
        the order a deletion of the account (or a purge of the family) takes them: the
        credential, then the family, then the token. Locking the token first, as one joined
        ``FOR UPDATE`` does, deadlocks against the cascade that deletes family and tokens.
        """
        owner = (
            await self.session.execute(
                select(RefreshToken.family_id, RefreshFamily.user_id)
                .join(RefreshFamily, RefreshFamily.id == RefreshToken.family_id)
                .where(RefreshToken.token_hash == token_hash)
            )
        ).first()
        if owner is None:
            return None
        family_id, user_id = owner
        if await CredentialRepository(self.session).hold(user_id) is None:
            return None
        family = await self.session.scalar(
            select(RefreshFamily)
            .where(RefreshFamily.id == family_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        token = await self.session.scalar(
            select(RefreshToken)
            .where(RefreshToken.token_hash == token_hash)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if family is None or token is None:
            return None
        return token, family

    async def get_family_for_update(
        self, family_id: uuid.UUID, *, user_id: uuid.UUID
    ) -> RefreshFamily | None:
        """A family of the user, locked."""
        result = await self.session.execute(
            select(RefreshFamily)
            .where(RefreshFamily.id == family_id, RefreshFamily.user_id == user_id)
            .with_for_update()
        )
        return result.scalar_one_or_none()

    async def revoke_family(self, family_id: uuid.UUID, *, now: datetime, reason: str) -> None:
        """Mark a family revoked (keeps the first reason if it already was)."""
        await self.session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )

    async def live_access_tokens(
        self, family_id: uuid.UUID, *, now: datetime
    ) -> list[tuple[str, datetime]]:
        """(jti, expiry) of the family's access tokens that have not expired."""
        result = await self.session.execute(
            select(RefreshToken.access_jti, RefreshToken.access_expires_at).where(
                RefreshToken.family_id == family_id, RefreshToken.access_expires_at > now
            )
        )
        return [(row[0], row[1]) for row in result]

    async def family_id_of_access_token(self, jti: str) -> uuid.UUID | None:
        """The family whose login or refresh issued the access token ``jti``."""
        result = await self.session.execute(
            select(RefreshToken.family_id).where(RefreshToken.access_jti == jti).limit(1)
        )
        return result.scalar_one_or_none()

    async def list_active_families(
        self,
        *,
        user_id: uuid.UUID,
        now: datetime,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[RefreshFamily]:
        """The user's sessions that can still refresh, newest first (keyset pagination)."""
        query = select(RefreshFamily).where(
            RefreshFamily.user_id == user_id,
            RefreshFamily.revoked_at.is_(None),
            RefreshFamily.expires_at > now,
        )
        if after is not None:
            query = query.where(tuple_(RefreshFamily.created_at, RefreshFamily.id) < after)
        query = query.order_by(RefreshFamily.created_at.desc(), RefreshFamily.id.desc())
        result = await self.session.execute(query.limit(limit))
        return list(result.scalars())
