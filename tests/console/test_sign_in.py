"""Signing in to the console through an OpenID Connect provider: the console starts the
auth area's flow, the browser goes to the provider (here a local issuer, its consent
stood in for by answering its authorization URL), comes back to /console/ with a code,
and the console finishes the sign-in in the browser that started it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from playwright.async_api import Route, expect

from functions.common.settings import Settings
from tests.conftest import make_settings
from tests.console.conftest import Console, screen
from tests.identity.oidc_issuer import CLIENT_ID, CLIENT_SECRET, Issuer
from tests.pg import free_port
from tests.responses.upstream import ScriptedUpstream

EMAIL = "console-owner@example.test"


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    server = Issuer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def console_port() -> int:
    return free_port()


@pytest.fixture
def other_origins(issuer: Issuer) -> tuple[str, ...]:
    return (urlsplit(issuer.url).netloc,)


@pytest.fixture
def settings(
    database_dsn: str, issuer: Issuer, console_port: int, upstream: ScriptedUpstream
) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=upstream.url,
        oauth2_google_client_id=CLIENT_ID,
        oauth2_google_client_secret=CLIENT_SECRET,
        oauth2_google_redirect_url=f"http://127.0.0.1:{console_port}/console/",
        oauth2_google_issuer=issuer.url,
        organization_admin_emails=EMAIL,
    )


async def test_sign_in_with_the_identity_provider(console: Console, issuer: Issuer) -> None:
    async def consent(route: Route) -> None:
        params = dict(parse_qsl(urlsplit(route.request.url).query))
        claims = {"sub": "console-1", "email": EMAIL, "email_verified": True}
        code = issuer.authorize(params, claims)
        back = f"{params['redirect_uri']}?{urlencode({'code': code, 'state': params['state']})}"
        await route.fulfill(status=302, headers={"Location": back})

    await console.context.route(f"{issuer.url}/authorize*", consent)
    page = await console.open()
    await page.get_by_role("button", name="Sign in with your identity provider").click()
    # Back from the provider: signed in as an owner of the organization (an admin e-mail).
    await expect(page.get_by_text(EMAIL)).to_be_visible()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert "code=" not in page.url  # the code does not linger in the address bar
    assert await page.evaluate("localStorage.length") == 0
    await page.get_by_role("link", name="Playground").click()
    await page.get_by_role("textbox", name="Message").fill("Hello from SSO")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: Hello from SSO")
    await screen(page, "signed-in-with-oidc")

    # A user acts in a project of their choice (OpenAI-Project): a new one, then chat there.
    await page.get_by_role("link", name="Projects").click()
    await page.get_by_role("textbox", name="Project name").fill("Second")
    await page.get_by_role("button", name="Create project").click()
    await expect(page.get_by_role("link", name="Second")).to_be_visible()
    await page.get_by_role("link", name="Playground").click()
    await page.get_by_role("combobox", name="Project").select_option(label="Second")
    second = await page.get_by_role("combobox", name="Project").input_value()
    async with page.expect_request("**/v1/chat/completions") as sent:
        await page.get_by_role("textbox", name="Message").fill("In the second project")
        await page.get_by_role("button", name="Send").click()
    assert (await sent.value).headers["openai-project"] == second
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: In the second")


async def test_a_refused_sign_in_shows_the_apis_message(console: Console) -> None:
    page = await console.open("?code=forged&state=forged")
    await expect(page.get_by_role("alert")).to_contain_text("state")
    assert "code=" not in page.url
    await expect(page.get_by_role("button", name="Continue as a guest")).to_be_visible()
