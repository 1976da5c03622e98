"""FastAPI dependencies of the orders service, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from servicekit.deps import PrincipalDep, RuntimeDep, SessionDep
from servicekit.outbox import Outbox

__all__ = ["CurrentUser", "IdempotencyKey", "OutboxDep", "SessionDep"]


async def get_outbox(runtime: RuntimeDep) -> Outbox:
    """The service's outbox (events recorded in the request's transaction)."""
    return runtime.outbox


OutboxDep = Annotated[Outbox, Depends(get_outbox)]
CurrentUser = PrincipalDep
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a POST safely: the same key and body return the first response.",
    ),
]
