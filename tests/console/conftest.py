"""The web console in a real Chromium (Debian's ``chromium``, driven by Playwright) against
the whole app on a real port, with a scripted model upstream and a local Serper.

Every page of a test is watched: a request to any other origin fails the test, and so
does an uncaught page error or a dialog (``alert`` from model output would be one).
Screenshots go to ``.test-output/console/`` (or ``$JAN_TEST_OUTPUT/console``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Page, Request, async_playwright

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.conftest import make_settings
from tests.factories import Tenant, create_tenant
from tests.responses.upstream import ScriptedUpstream
from tests.tools.fakes import SERPER_KEY, FakeSerper, serper
from tests.tools.http_server import serve_app

__all__ = ["serper"]

CHROMIUM = os.environ.get("JAN_TEST_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("JAN_TEST_OUTPUT", REPO / ".test-output")) / "console"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        await chromium.close()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def settings(
    database_dsn: str, upstream: ScriptedUpstream, serper: tuple[FakeSerper, str]
) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=upstream.url,
        serper_url=serper[1],
        serper_api_key=SERPER_KEY,
    )


@dataclass
class Console:
    """The app on a real port, a tenant, and what the test's pages did."""

    base: str
    tenant: Tenant
    context: BrowserContext
    foreign: list[str] = field(default_factory=list)  # requests to another origin
    errors: list[str] = field(default_factory=list)  # uncaught errors, dialogs
    console: list[str] = field(default_factory=list)  # console messages

    async def open(self, hash_: str = "") -> Page:
        page = await self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("dialog", self._dialog)
        await page.goto(f"{self.base}/console/{hash_}")
        return page

    async def _dialog(self, dialog: Dialog) -> None:
        self.errors.append(f"dialog {dialog.type}: {dialog.message}")
        await dialog.dismiss()

    async def sign_in(self, page: Page, key: str) -> None:
        await page.get_by_role("textbox", name="API key").fill(key)
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await page.get_by_role("button", name="Sign out").wait_for()


@pytest.fixture
def console_port() -> int:
    """Where the app listens (0: any free port; a test that must know it first sets it)."""
    return 0


@pytest.fixture
def other_origins() -> tuple[str, ...]:
    """Hosts (host:port) a test's pages may reach besides the app (an identity provider)."""
    return ()


@pytest.fixture
async def console(
    runtime: Runtime, browser: Browser, console_port: int, other_origins: tuple[str, ...]
) -> AsyncIterator[Console]:
    async with serve_app(runtime, console_port) as base:
        tenant = await create_tenant(runtime)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        found = Console(base, tenant, context)
        allowed = {urlsplit(base).netloc, *other_origins}

        def watch(request: Request) -> None:
            if urlsplit(request.url).netloc not in allowed and not request.url.startswith("data:"):
                found.foreign.append(request.url)

        context.on("request", watch)
        try:
            yield found
        finally:
            await context.close()
        assert not found.foreign, f"requests to other hosts: {found.foreign}"
        assert not found.errors, found.errors


async def screen(page: Page, name: str) -> None:
    """A screenshot of the screen, and axe-core's check of it: no serious or critical
    violation. axe runs inside the page (evaluated, as the console's CSP allows no other
    script), from the copy vendored here."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())
    violations: list[dict[str, Any]] = await page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => ({id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target)}))"""
    )
    assert not violations, f"{name}: {violations}"
