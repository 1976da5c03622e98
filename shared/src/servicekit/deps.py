"""FastAPI dependencies every service uses: its runtime, a unit-of-work session, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.runtime import ServiceRuntime
from servicekit.security import Principal, TokenVerifier, bearer_dependency


async def get_runtime(request: Request) -> ServiceRuntime:
    """The running service's resources."""
    return cast(ServiceRuntime, request.app.state.runtime)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once after the handler succeeds (one commit point)."""
    runtime = cast(ServiceRuntime, request.app.state.runtime)
    async with runtime.sessions() as session, session.begin():
        yield session


def _verifier(request: Request) -> TokenVerifier:
    return cast(ServiceRuntime, request.app.state.runtime).verifier


current_principal = bearer_dependency(_verifier)

RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]
# scope="function": the commit happens before the response is sent, so a client never sees a
# success for a transaction that then fails to commit.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
