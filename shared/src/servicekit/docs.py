"""A service's OpenAPI document and Swagger UI, served with no asset from outside the service.

FastAPI's default docs page loads Swagger UI's script and stylesheet from a CDN: blank on a
machine without internet, in CI, in an air-gapped cluster or behind a strict CSP. Here the
page loads them from the service itself, under its prefix (so the gateway routes them like
any other path), from the pinned ``swagger-ui-bundle-v2`` distribution. This is FastAPI's
"self-hosting JavaScript and CSS for docs" recipe.

The document is served twice: at ``/openapi.json`` on the service's own port (the contract
of a service) and at ``<prefix>/openapi.json`` (through the gateway, which routes by prefix);
the docs page loads the prefixed one, the only one the gateway reaches.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

SWAGGER_CLIENT_ID = "swagger-ui"


def install_docs(app: FastAPI, *, prefix: str) -> None:
    """Serve ``/openapi.json``, ``<prefix>/openapi.json`` and ``<prefix>/docs`` on ``app``.

    ``app`` is created with ``docs_url=None`` and ``openapi_url=f"{prefix}/openapi.json"``.
    """
    openapi_url = f"{prefix}/openapi.json"
    if app.openapi_url != openapi_url or app.docs_url is not None:
        raise ValueError("install_docs needs docs_url=None and openapi_url=<prefix>/openapi.json")
    docs_url = f"{prefix}/docs"
    assets_url = f"{docs_url}/assets"
    redirect_url = f"{docs_url}/oauth2-redirect"

    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets_url}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets_url}/swagger-ui.css",
            swagger_favicon_url=f"{assets_url}/favicon-32x32.png",
            oauth2_redirect_url=redirect_url,
            init_oauth={"clientId": SWAGGER_CLIENT_ID},
            # The online validator badge would send the document to a third-party host.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_api_route("/openapi.json", openapi_document, methods=["GET"], include_in_schema=False)
    app.add_api_route(docs_url, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(redirect_url, oauth2_redirect, methods=["GET"], include_in_schema=False)
    app.mount(assets_url, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui-assets")
