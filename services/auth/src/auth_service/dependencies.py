"""FastAPI dependencies of the auth service."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterable
from typing import Annotated, cast

from fastapi import Depends, Header, Request
from pydantic import IPvAnyNetwork
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.errors import CredentialsInQuery
from auth_service.resources import AuthResources
from servicekit.deps import PrincipalDep, RuntimeDep
from servicekit.runtime import ServiceRuntime

__all__ = [
    "AuthDep",
    "ClientAddressDep",
    "PrincipalDep",
    "RuntimeDep",
    "SessionDep",
    "UserAgentDep",
    "reject_credentials_in_query",
]

# Anything that would put a secret into URLs, and so into access logs and browser history.
_SECRET_QUERY_PARAMETERS = frozenset(
    {"password", "refresh_token", "access_token", "client_secret", "username"}
)


async def get_auth(request: Request) -> AuthResources:
    """The auth service's keys, hasher and throttle."""
    return cast(AuthResources, request.app.state.auth)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed once after the handler succeeds."""
    # Unlike the shared dependency, an error marked ``keep_changes`` (a refresh token reused:
    # the family's revocation is the point) commits what the request did before answering.
    runtime = cast(ServiceRuntime, request.app.state.runtime)
    async with runtime.sessions() as session:
        transaction = await session.begin()
        try:
            yield session
        except Exception as exc:
            if getattr(exc, "keep_changes", False):
                await transaction.commit()
            else:
                await transaction.rollback()
            raise
        await transaction.commit()


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _is_trusted(address: str, trusted: Iterable[IPvAnyNetwork]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in trusted)  # type: ignore[operator]


def resolve_client_address(
    peer: str | None,
    *,
    real_ip: str | None,
    forwarded_for: str | None,
    trusted: Iterable[IPvAnyNetwork],
) -> str:
    """The client's address: the peer's, or whom a trusted proxy says it forwarded for."""
    # X-Real-IP first, else the nearest untrusted hop of X-Forwarded-For.
    trusted = list(trusted)
    if peer is None or not _is_trusted(peer, trusted):
        return peer or "unknown"
    if real_ip and _ip(real_ip) is not None:
        return real_ip.strip()
    if forwarded_for:
        for hop in reversed(forwarded_for.split(",")):
            if _ip(hop) is None:
                break
            if not _is_trusted(hop, trusted):
                return hop.strip()
    return peer


async def get_client_address(
    request: Request, auth: Annotated[AuthResources, Depends(get_auth)]
) -> str:
    """The address failed logins are counted against."""
    return resolve_client_address(
        request.client.host if request.client else None,
        real_ip=request.headers.get("x-real-ip"),
        forwarded_for=request.headers.get("x-forwarded-for"),
        trusted=auth.settings.trusted_proxies,
    )


async def reject_credentials_in_query(request: Request) -> None:
    """400 for a secret in the query string, even next to a proper body."""
    if _SECRET_QUERY_PARAMETERS.intersection(k.lower() for k in request.query_params):
        raise CredentialsInQuery()


AuthDep = Annotated[AuthResources, Depends(get_auth)]
# scope="function": the commit happens before the response is sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ClientAddressDep = Annotated[str, Depends(get_client_address)]
UserAgentDep = Annotated[str | None, Header(alias="User-Agent", include_in_schema=False)]
