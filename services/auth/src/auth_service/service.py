"""The rules of authentication: registration, login, token rotation, revocation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.errors import (
    EmailAlreadyRegistered,
    InvalidCredentials,
    InvalidRefreshToken,
    RefreshTokenReused,
    SessionNotFound,
)
from auth_service.models import Credential, RefreshFamily, RefreshToken
from auth_service.passwords import PasswordHasher, check_password
from auth_service.repository import CredentialRepository, RefreshTokenRepository
from auth_service.tokens import AccessToken, hash_refresh_token, new_refresh_token
from servicekit.errors import Unauthorized
from servicekit.events import SessionRevoked, UserRegistered
from servicekit.logging import get_logger
from servicekit.outbox import Outbox
from servicekit.pagination import decode_cursor, encode_cursor
from servicekit.security import Principal

if TYPE_CHECKING:
    from auth_service.resources import AuthResources

log = get_logger(__name__)

DEFAULT_ROLES = ("user",)
ADMIN_ROLES = ("admin",)
_USER_AGENT_MAX = 255


@dataclass(frozen=True)
class TokenPair:
    """What a login or refresh returns."""

    access: AccessToken
    refresh_token: str


@dataclass(frozen=True)
class SessionView:
    """A session as its owner sees it."""

    family: RefreshFamily
    current: bool


@dataclass(frozen=True)
class SessionList:
    """One page of sessions."""

    items: list[SessionView]
    next_cursor: str | None


# --- registration ----------------------------------------------------------------------------


async def register(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    outbox: Outbox,
    email: str,
    password: str,
    name: str,
    roles: Sequence[str] = DEFAULT_ROLES,
) -> Credential:
    """Create a credential and record ``user.registered`` in the same transaction."""
    check_password(password, email=email, name=name)
    credentials = CredentialRepository(session)
    # Cheap check first so a taken email costs no hashing; the unique index settles races.
    if await credentials.email_exists(email):
        raise EmailAlreadyRegistered()
    password_hash = await hasher.hash(password)
    now = datetime.now(UTC)
    credential = Credential(
        id=uuid.uuid4(),
        email=email,
        name=name,
        password_hash=password_hash,
        roles=list(roles),
        created_at=now,
        updated_at=now,
    )
    await credentials.add(credential)
    await outbox.add(
        session,
        UserRegistered(
            user_id=credential.id, email=email, name=name, roles=list(roles), registered_at=now
        ),
    )
    log.info("auth.user_registered", user_id=str(credential.id), roles=list(roles))
    return credential


# --- login and tokens ------------------------------------------------------------------------


async def login(
    *,
    session: AsyncSession,
    auth: AuthResources,
    email: str,
    password: str,
    address: str,
    user_agent: str | None,
    failure: type[Unauthorized] = InvalidCredentials,
) -> TokenPair:
    """Check email and password (throttled) and start a session; ``failure`` on a mismatch."""
    # An unknown email costs the same hashing work as a wrong password, with the same answer.
    attempt = await auth.throttle.attempt(email=email, address=address)
    credentials = CredentialRepository(session)
    credential = await credentials.get_by_email(email)
    if credential is None:
        await auth.hasher.verify_dummy(password)
        log.info("auth.login_failed", address=address)
        raise failure()
    if not await auth.hasher.verify(credential.password_hash, password):
        log.info("auth.login_failed", user_id=str(credential.id), address=address)
        raise failure()
    await auth.throttle.succeeded(attempt)
    if auth.hasher.needs_rehash(credential.password_hash):
        credential.password_hash = await auth.hasher.hash(password)
        credential.updated_at = datetime.now(UTC)
        log.info("auth.password_rehashed", user_id=str(credential.id))
    pair = await _start_session(
        session=session, auth=auth, credential=credential, user_agent=user_agent
    )
    log.info("auth.logged_in", user_id=str(credential.id))
    return pair


async def _start_session(
    *,
    session: AsyncSession,
    auth: AuthResources,
    credential: Credential,
    user_agent: str | None,
) -> TokenPair:
    now = datetime.now(UTC)
    family = RefreshFamily(
        id=uuid.uuid4(),
        user_id=credential.id,
        created_at=now,
        expires_at=now + auth.session_lifetime,
        last_used_at=now,
        user_agent=user_agent[:_USER_AGENT_MAX] if user_agent else None,
    )
    tokens = RefreshTokenRepository(session)
    await tokens.add_family(family)
    return await _issue_pair(
        tokens=tokens, auth=auth, family=family, roles=credential.roles, now=now
    )


async def _issue_pair(
    *,
    tokens: RefreshTokenRepository,
    auth: AuthResources,
    family: RefreshFamily,
    roles: Sequence[str],
    now: datetime,
) -> TokenPair:
    access = auth.issuer.issue(user_id=family.user_id, roles=roles)
    refresh_token = new_refresh_token()
    await tokens.add_token(
        RefreshToken(
            id=uuid.uuid4(),
            family_id=family.id,
            token_hash=hash_refresh_token(refresh_token),
            created_at=now,
            expires_at=min(now + auth.refresh_idle, family.expires_at),
            access_jti=access.jti,
            access_expires_at=access.expires_at,
        )
    )
    return TokenPair(access=access, refresh_token=refresh_token)


async def refresh(*, session: AsyncSession, auth: AuthResources, refresh_token: str) -> TokenPair:
    """Exchange a refresh token for a new pair; a reused one revokes its whole family."""
    tokens = RefreshTokenRepository(session)
    found = await tokens.find_for_update(hash_refresh_token(refresh_token))
    now = datetime.now(UTC)
    if found is None:
        raise InvalidRefreshToken()
    token, family = found
    if family.revoked_at is not None or family.expires_at <= now:
        raise InvalidRefreshToken()
    if token.used_at is not None:
        # Either the client or a thief holds a stale copy; neither can be told apart, so
        # the session ends for both (RFC 9700 §4.14.2).
        log.warning(
            "auth.refresh_token_reused", family_id=str(family.id), user_id=str(family.user_id)
        )
        await _revoke_family(
            session=session, outbox=auth.outbox, family=family, now=now, reason="reuse_detected"
        )
        raise RefreshTokenReused()
    if token.expires_at <= now:
        raise InvalidRefreshToken()
    credential = await CredentialRepository(session).get(family.user_id)
    if credential is None:
        raise InvalidRefreshToken()
    token.used_at = now
    family.last_used_at = now
    return await _issue_pair(
        tokens=tokens, auth=auth, family=family, roles=credential.roles, now=now
    )


# --- revocation ------------------------------------------------------------------------------


async def _revoke_family(
    *, session: AsyncSession, outbox: Outbox, family: RefreshFamily, now: datetime, reason: str
) -> None:
    tokens = RefreshTokenRepository(session)
    await tokens.revoke_family(family.id, now=now, reason=reason)
    live = await tokens.live_access_tokens(family.id, now=now)
    await _publish_revocations(
        session=session, outbox=outbox, user_id=family.user_id, access_tokens=live
    )


async def _publish_revocations(
    *,
    session: AsyncSession,
    outbox: Outbox,
    user_id: uuid.UUID,
    access_tokens: Sequence[tuple[str, datetime]],
) -> None:
    seen: set[str] = set()
    for jti, expires_at in access_tokens:
        if jti in seen:
            continue
        seen.add(jti)
        await outbox.add(session, SessionRevoked(jti=jti, user_id=user_id, expires_at=expires_at))


async def logout(
    *, session: AsyncSession, auth: AuthResources, principal: Principal, refresh_token: str
) -> None:
    """End the caller's session: its refresh family and every live access token of it."""
    # The presented access token is revoked even when the refresh token is unknown or already
    # revoked, so logging out twice is harmless.
    now = datetime.now(UTC)
    revoked: list[tuple[str, datetime]] = [(principal.jti, principal.expires_at)]
    tokens = RefreshTokenRepository(session)
    found = await tokens.find_for_update(hash_refresh_token(refresh_token))
    if found is not None and found[1].user_id == principal.user_id:
        family = found[1]
        await tokens.revoke_family(family.id, now=now, reason="logout")
        revoked += await tokens.live_access_tokens(family.id, now=now)
    await _publish_revocations(
        session=session, outbox=auth.outbox, user_id=principal.user_id, access_tokens=revoked
    )
    log.info("auth.logged_out", user_id=str(principal.user_id))


async def revoke_session(
    *, session: AsyncSession, auth: AuthResources, principal: Principal, session_id: uuid.UUID
) -> None:
    """End one of the caller's sessions (for example a lost device); 404 if not theirs."""
    tokens = RefreshTokenRepository(session)
    family = await tokens.get_family_for_update(session_id, user_id=principal.user_id)
    now = datetime.now(UTC)
    if family is None or family.revoked_at is not None or family.expires_at <= now:
        raise SessionNotFound()
    await _revoke_family(
        session=session, outbox=auth.outbox, family=family, now=now, reason="revoked_by_user"
    )
    log.info("auth.session_revoked", user_id=str(principal.user_id), family_id=str(family.id))


async def forget_user(
    *, session: AsyncSession, outbox: Outbox, user_id: uuid.UUID, access_token_ttl: timedelta
) -> None:
    """Delete a user's credentials and refresh tokens; revoke every token issued so far."""
    deleted = await CredentialRepository(session).delete(user_id)
    if not deleted:
        log.info("auth.user_unknown", user_id=str(user_id))
        return
    now = datetime.now(UTC)
    await outbox.add(
        session,
        SessionRevoked(
            jti=None, user_id=user_id, revoked_at=now, expires_at=now + access_token_ttl
        ),
    )
    log.info("auth.user_forgotten", user_id=str(user_id))


# --- the caller's sessions -------------------------------------------------------------------


async def list_sessions(
    *, session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> SessionList:
    """The caller's active sessions, newest first."""
    after = decode_cursor(cursor) if cursor else None
    tokens = RefreshTokenRepository(session)
    families = await tokens.list_active_families(
        user_id=principal.user_id, now=datetime.now(UTC), limit=limit + 1, after=after
    )
    current = await tokens.family_id_of_access_token(principal.jti)
    page = families[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(families) > limit else None
    return SessionList(
        items=[SessionView(family=f, current=f.id == current) for f in page],
        next_cursor=next_cursor,
    )
