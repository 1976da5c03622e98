"""Checks every service must pass, shared so each service's suite runs them against itself.

A service's test module subclasses ``ServiceAppContract``, sets ``prefix`` and provides two
fixtures: ``settings`` (pointing at this run's migrated database) and ``app_factory``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families

from servicekit.settings import ServiceSettings
from servicekit.testing.plugin import serve_app

DEAD_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"


class ServiceAppContract:
    """The shared contract: health, docs, error envelope, request ids, content types."""

    prefix: ClassVar[str]

    async def test_live_and_ready(self, app_factory: Callable[[Any], Any], settings: Any) -> None:
        async with serve_app(app_factory(settings)) as client:
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
        assert live.status_code == 200
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["broker"] == "ok"

    async def test_ready_is_503_naming_the_database_when_it_is_down(
        self, app_factory: Callable[[Any], Any], settings: ServiceSettings
    ) -> None:
        broken = settings.model_copy(update={"database_url": DEAD_DATABASE})
        app = app_factory(broken)
        async with serve_app(app) as client:
            ready = await client.get("/health/ready")
            live = await client.get("/health/live")
            # Without a database no handler can commit: the instance stops consuming and the
            # messages wait in their queues.
            consumers = app.state.runtime.running_consumers
            for _ in range(60):
                if not any(c.consuming for c in consumers):
                    break
                await asyncio.sleep(0.1)
            assert consumers
            assert not any(c.consuming for c in consumers)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("fail")
        assert ready.json()["checks"]["broker"] == "ok"
        assert live.status_code == 200

    async def test_metrics_are_exposed(
        self, app_factory: Callable[[Any], Any], settings: Any
    ) -> None:
        async with serve_app(app_factory(settings)) as client:
            await client.get(f"{self.prefix}/openapi.json")
            response = await client.get("/metrics")
        assert response.status_code == 200
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }
        key = (
            "http_requests_total",
            tuple(
                sorted(
                    {
                        "service": settings.service_name,
                        "method": "GET",
                        "route": f"{self.prefix}/openapi.json",
                        "status": "200",
                    }.items()
                )
            ),
        )
        assert samples.get(key, 0) >= 1
        names = {name for name, _ in samples}
        for family in ("http_request_duration_seconds_count", "consumers_active"):
            assert family in names

    async def test_openapi_and_docs_under_the_prefix(
        self, app_factory: Callable[[Any], Any], settings: Any
    ) -> None:
        async with serve_app(app_factory(settings)) as client:
            spec = await client.get(f"{self.prefix}/openapi.json")
            docs = await client.get(f"{self.prefix}/docs")
        assert spec.status_code == 200
        assert spec.json()["openapi"].startswith("3.")  # an OpenAPI 3 document
        assert "/health/ready" not in spec.json()["paths"]
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()

    async def test_openapi_on_the_service_port_is_the_prefixed_document(
        self, app_factory: Callable[[Any], Any], settings: Any
    ) -> None:
        async with serve_app(app_factory(settings)) as client:
            bare = await client.get("/openapi.json")
            prefixed = await client.get(f"{self.prefix}/openapi.json")
        assert bare.status_code == 200
        assert bare.headers["content-type"].startswith("application/json")
        assert bare.json() == prefixed.json()
        assert any(path.startswith(self.prefix) for path in bare.json()["paths"])

    async def test_docs_page_loads_its_assets_from_the_service_under_the_prefix(
        self, app_factory: Callable[[Any], Any], settings: Any
    ) -> None:
        async with serve_app(app_factory(settings)) as client:
            docs = await client.get(f"{self.prefix}/docs")
            assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
            loaded = {url: await client.get(url) for url in assets}
            redirect = await client.get(f"{self.prefix}/docs/oauth2-redirect")
        assert docs.status_code == 200
        assert f"url: '{self.prefix}/openapi.json'" in docs.text
        assert assets, docs.text
        for url, response in loaded.items():
            assert url.startswith(f"{self.prefix}/docs/"), url  # nothing from another host
            assert response.status_code == 200, url
            assert len(response.content) > 0, url
        assert {url.rsplit("/", 1)[-1] for url in assets} >= {
            "swagger-ui-bundle.js",
            "swagger-ui.css",
        }
        assert redirect.status_code == 200

    async def test_unknown_route_gets_the_error_envelope_with_the_request_id(
        self, app_factory: Callable[[Any], Any], settings: Any
    ) -> None:
        async with serve_app(app_factory(settings)) as client:
            response = await client.get(
                f"{self.prefix}/no/such/route", headers={"X-Request-ID": "contract-check-1"}
            )
        assert response.status_code == 404
        assert response.headers["x-request-id"] == "contract-check-1"
        error = response.json()["error"]
        assert error["request_id"] == "contract-check-1"
        assert error["code"]
        assert error["message"]

    async def test_a_request_id_is_created_when_missing(
        self, app_factory: Callable[[Any], Any], settings: Any
    ) -> None:
        async with serve_app(app_factory(settings)) as client:
            response = await client.get("/health/live")
        assert len(response.headers["x-request-id"]) >= 16

    async def test_wrong_content_type_is_415(
        self, app_factory: Callable[[Any], Any], settings: Any
    ) -> None:
        async with serve_app(app_factory(settings)) as client:
            response = await client.post(
                self.prefix, content=b"<xml/>", headers={"Content-Type": "application/xml"}
            )
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "unsupported_media_type"
