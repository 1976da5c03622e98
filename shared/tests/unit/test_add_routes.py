"""Routes registered flat answer and document exactly as the included router would."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Response, status
from pydantic import BaseModel

from servicekit.runtime import add_routes


class Item(BaseModel):
    """An item."""

    id: int
    name: str


class NewItem(BaseModel):
    name: str


def caller(x_caller: Annotated[str | None, Header()] = None) -> str:
    return x_caller or "anonymous"


async def audited() -> None:
    """A router-level dependency."""


def build_router() -> APIRouter:
    router = APIRouter(
        prefix="/items",
        tags=["items"],
        dependencies=[Depends(audited)],
        responses={503: {"description": "Down."}},
    )

    @router.get("/{item_id}", responses={404: {"description": "No such item."}})
    async def read_item(item_id: int, who: Annotated[str, Depends(caller)]) -> Item:
        """Read one item."""
        return Item(id=item_id, name=who)

    @router.get("", response_model=list[Item], summary="All items")
    async def list_items(limit: Annotated[int, Query(ge=1, le=10)] = 5) -> Response:
        return Response("[]", media_type="application/json")

    @router.post("", status_code=status.HTTP_201_CREATED, operation_id="createItem")
    async def create_item(item: NewItem) -> Item:
        return Item(id=1, name=item.name)

    @router.delete("/{item_id}", status_code=204, deprecated=True, include_in_schema=False)
    async def delete_item(item_id: int) -> Response:
        return Response(status_code=204)

    return router


def nested_app() -> FastAPI:
    app = FastAPI(title="t")
    app.include_router(build_router())
    return app


def flat_app() -> FastAPI:
    app = FastAPI(title="t")
    add_routes(app, build_router())
    return app


def test_the_openapi_document_is_the_same() -> None:
    assert flat_app().openapi() == nested_app().openapi()


REQUESTS = [
    ("GET", "/items/7", {}),
    ("GET", "/items/seven", {}),
    ("GET", "/items?limit=50", {}),
    ("GET", "/items", {}),
    ("POST", "/items", {"json": {"name": "pen"}}),
    ("POST", "/items", {"json": {"nom": "pen"}}),
    ("PUT", "/items/7", {}),
    ("DELETE", "/items/7", {}),
    ("GET", "/nothing/here", {}),
]


@pytest.mark.parametrize(("method", "path", "extra"), REQUESTS)
async def test_every_answer_is_the_same(method: str, path: str, extra: dict[str, object]) -> None:
    answers = []
    for app in (nested_app(), flat_app()):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.request(method, path, headers={"X-Caller": "ada"}, **extra)  # type: ignore[arg-type]
        answers.append((response.status_code, response.headers.get("allow"), response.content))
    assert answers[0] == answers[1]


async def test_dependency_overrides_of_the_app_apply() -> None:
    app = flat_app()
    app.dependency_overrides[caller] = lambda: "override"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/items/3")
    assert response.json() == {"id": 3, "name": "override"}


def test_only_api_routes_are_accepted() -> None:
    router = APIRouter()
    router.add_route("/plain", lambda request: Response())
    with pytest.raises(TypeError, match="only API routes"):
        add_routes(FastAPI(), router)
