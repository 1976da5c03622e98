"""FastAPI dependencies of the payments-gateway service, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from payments_gateway.resources import PaymentsResources
from servicekit.deps import PrincipalDep, SessionDep


async def get_resources(request: Request) -> PaymentsResources:
    """The service's provider client and runtime parts."""
    return cast(PaymentsResources, request.app.state.payments)


ResourcesDep = Annotated[PaymentsResources, Depends(get_resources)]

__all__ = ["PrincipalDep", "ResourcesDep", "SessionDep"]
