"""Each service's own denylist of revoked access tokens (`session.revoked`, `user.deleted`).

Durable: the revocations live in the service's database, written by its consumer exactly once
(inbox). Shared by its instances: every instance keeps the unexpired rows in memory and picks up
new ones by polling a sequence number every ``poll_interval`` (0.5 s), so a token is refused by
every instance within a second, and checking a request costs a set lookup, with no network call
to auth or anywhere else.

A row with a ``jti`` revokes that token; a row without one revokes every token of the user issued
at or before ``revoked_before`` (logout everywhere, account deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    String,
    Table,
    Uuid,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit.bus import ReceivedEvent
from servicekit.events import SessionRevoked, UserDeleted
from servicekit.security import Principal

log = structlog.get_logger("servicekit.revocation")

TABLE = "revocations"


def revocation_columns() -> list[Column[Any]]:
    """Fresh column objects for the revocations table."""
    return [
        Column("seq", BigInteger, Identity(), primary_key=True),
        Column("jti", String(200), nullable=True, unique=True),
        Column("user_id", Uuid, nullable=False),
        Column("revoked_before", DateTime(timezone=True), nullable=True),
        Column("expires_at", DateTime(timezone=True), nullable=False),
    ]


def revocation_table(metadata: MetaData, name: str = TABLE) -> Table:
    """Add the revocations table to a service's metadata (every service's database has one)."""
    return Table(name, metadata, *revocation_columns())


revocations = revocation_table(MetaData())


@dataclass(frozen=True)
class _UserCutoff:
    revoked_before: datetime
    expires_at: datetime


class Denylist:
    """Revoked tokens of one service, mirrored in memory from its database."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        poll_interval: float = 0.5,
        max_token_lifetime: timedelta = timedelta(minutes=15),
    ) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self.max_token_lifetime = max_token_lifetime
        self._jtis: dict[str, datetime] = {}
        self._users: dict[uuid.UUID, _UserCutoff] = {}
        self._last_seq = 0
        self._task: asyncio.Task[None] | None = None
        self.loaded = False

    async def start(self) -> None:
        """Load what is there and follow new rows in the background."""
        with contextlib.suppress(Exception):
            await self.refresh()
        self._task = asyncio.create_task(self._follow(), name="denylist-follow")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        # Expired rows are deleted by the service's retention (servicekit.retention).
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("denylist.refresh_failed", error=f"{type(exc).__name__}: {exc}")

    async def refresh(self) -> None:
        """Read rows added since the last refresh."""
        now = datetime.now(UTC)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(revocations)
                    .where(revocations.c.seq > self._last_seq, revocations.c.expires_at > now)
                    .order_by(revocations.c.seq)
                )
            ).all()
            if not rows:
                # Keep the cursor moving past expired rows too.
                top = (
                    await conn.execute(
                        select(revocations.c.seq).order_by(revocations.c.seq.desc()).limit(1)
                    )
                ).scalar()
                self._last_seq = max(self._last_seq, int(top or 0))
        for row in rows:
            self._remember(row.jti, row.user_id, row.revoked_before, row.expires_at)
            self._last_seq = max(self._last_seq, int(row.seq))
        self.loaded = True
        self._forget_expired(now)

    def _remember(
        self,
        jti: str | None,
        user_id: uuid.UUID,
        revoked_before: datetime | None,
        expires_at: datetime,
    ) -> None:
        if jti:
            self._jtis[jti] = expires_at
        elif revoked_before is not None:
            current = self._users.get(user_id)
            if current is None or current.revoked_before < revoked_before:
                self._users[user_id] = _UserCutoff(revoked_before, expires_at)

    def _forget_expired(self, now: datetime) -> None:
        self._jtis = {j: exp for j, exp in self._jtis.items() if exp > now}
        self._users = {u: c for u, c in self._users.items() if c.expires_at > now}

    async def is_revoked(self, principal: Principal) -> bool:
        """True when the token or every token of its user issued by then was revoked."""
        if principal.jti in self._jtis:
            return True
        cutoff = self._users.get(principal.user_id)
        if cutoff is None:
            return False
        issued = principal.issued_at or principal.expires_at - self.max_token_lifetime
        return issued <= cutoff.revoked_before

    async def _record(
        self,
        session: AsyncSession,
        *,
        jti: str | None,
        user_id: uuid.UUID,
        revoked_before: datetime | None,
        expires_at: datetime,
    ) -> None:
        await session.execute(
            insert(revocations)
            .values(jti=jti, user_id=user_id, revoked_before=revoked_before, expires_at=expires_at)
            .on_conflict_do_nothing()
        )
        # Refusing early is safe: should the transaction fail, the event is redelivered.
        self._remember(jti, user_id, revoked_before, expires_at)

    async def on_session_revoked(self, event: ReceivedEvent, session: AsyncSession) -> None:
        """Handler for ``session.revoked``."""
        data = event.payload(SessionRevoked)
        if data.jti:
            await self._record(
                session,
                jti=data.jti,
                user_id=data.user_id,
                revoked_before=None,
                expires_at=data.expires_at,
            )
            return
        cutoff = data.revoked_at or event.envelope.occurred_at
        await self._record(
            session,
            jti=None,
            user_id=data.user_id,
            revoked_before=cutoff,
            expires_at=max(data.expires_at, cutoff + self.max_token_lifetime),
        )

    async def on_user_deleted(self, event: ReceivedEvent, session: AsyncSession) -> None:
        """Handler for ``user.deleted``: every token issued before the deletion is refused."""
        data = event.payload(UserDeleted)
        await self._record(
            session,
            jti=None,
            user_id=data.user_id,
            revoked_before=data.deleted_at,
            expires_at=data.deleted_at + self.max_token_lifetime,
        )
