"""FastAPI dependencies of the notifications service, as Annotated aliases."""

from __future__ import annotations

from servicekit.deps import PrincipalDep, RuntimeDep, SessionDep

__all__ = ["PrincipalDep", "RuntimeDep", "SessionDep"]
