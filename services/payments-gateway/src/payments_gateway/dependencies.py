"""FastAPI dependencies of the payments-gateway service, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from payments_gateway.context import PaymentsContext
from servicekit.deps import PrincipalDep, SessionDep


async def get_context(request: Request) -> PaymentsContext:
    """The service's provider client and runtime parts."""
    return cast(PaymentsContext, request.app.state.payments)


ContextDep = Annotated[PaymentsContext, Depends(get_context)]

__all__ = ["ContextDep", "PrincipalDep", "SessionDep"]
