"""Swagger UI in a real browser, through the gateway, with nothing loaded from anywhere else.

Headless Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it) driven by
Playwright: open ``/users/docs``, Authorize with the OAuth2 password flow against
``/auth/token``, execute ``GET /users/me`` and read the answer on the page, as a newcomer
would. A screenshot of the result is kept in the test's directory (its path is printed).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Request, expect, sync_playwright

from servicekit.testing.waiting import wait_until_sync

from .support import System

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
PASSWORD = "correct horse battery staple 42"
STEP_MS = 30_000  # generous: the machine may be loaded by other suites


@pytest.fixture
def registered_user(system: System) -> str:
    """A user whose profile exists (users consumed ``user.registered``); returns the email."""
    email = f"docs-{uuid.uuid4().hex[:12]}@example.com"
    gateway = system.gateway
    registered = httpx.post(
        f"{gateway}/auth/register", json={"email": email, "password": PASSWORD, "name": "Docs"}
    )
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{gateway}/auth/login", json={"email": email, "password": PASSWORD})
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    def profile_exists() -> bool:
        return httpx.get(f"{gateway}/users/me", headers=headers).status_code == 200

    wait_until_sync(profile_exists, timeout=15, what="the profile to be created")
    return email


def authorize(page: Page, *, email: str) -> None:
    """The Authorize dialog, password flow: the token comes from /auth/token."""
    page.locator(".scheme-container button.authorize").click()
    dialog = page.locator(".modal-ux")
    dialog.locator("#oauth_username").fill(email)
    dialog.locator("#oauth_password").fill(PASSWORD)
    dialog.locator(".auth-btn-wrapper button.authorize").click()
    # Swagger UI now holds a token (argon2 on a loaded machine may take a while).
    expect(dialog.get_by_role("heading", name="Authorized")).to_be_visible(timeout=STEP_MS)
    dialog.get_by_role("button", name="Close").click()


def execute(page: Page, *, method: str, path: str) -> tuple[str, str]:
    """Try out one operation; the status code and the body Swagger UI shows."""
    operation = page.locator(f".opblock-{method}").filter(
        has=page.locator(f".opblock-summary-path[data-path='{path}']")
    )
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    live = operation.locator(".live-responses-table .response")
    expect(live).to_be_visible(timeout=STEP_MS)
    status = live.locator(".response-col_status").inner_text().strip()
    body = live.locator(".response-col_description .microlight").first.inner_text()
    return status, body


class TestSwaggerUiInABrowser:
    def test_authorize_and_get_me_through_the_gateway_with_no_outside_request(
        self, system: System, registered_user: str, tmp_path: Path
    ) -> None:
        assert shutil.which(CHROMIUM), "needs Debian's chromium (apt-get install -y chromium)"
        gateway = urlsplit(system.gateway)
        requests: list[str] = []
        screenshot = tmp_path / "users-docs-get-me.png"

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.set_default_timeout(STEP_MS)

                def record(request: Request) -> None:
                    requests.append(request.url)

                page.on("request", record)
                page.goto(f"{system.gateway}/users/docs")
                expect(page.locator(".information-container .title")).to_contain_text("users")
                authorize(page, email=registered_user)
                status, body = execute(page, method="get", path="/users/me")
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
        print(f"screenshot: {screenshot}")

        assert status == "200", body
        assert registered_user in body
        outside = [
            url
            for url in requests
            if urlsplit(url).scheme not in ("data", "blob")
            and urlsplit(url)[:2] != (gateway.scheme, gateway.netloc)
        ]
        assert not outside, f"requests outside the gateway: {outside}"
        paths = {urlsplit(url).path for url in requests}
        assert {"/users/docs/assets/swagger-ui-bundle.js", "/users/openapi.json"} <= paths
        assert "/auth/token" in paths
        assert screenshot.stat().st_size > 0
