"""Administration in the browser: sign in with an admin key, create a project, a key
(shown once), a rate limit and a price, chat with that key, and see the usage and cost
charts; forms check
their fields before sending and show the API's own errors; the first load stays small."""

from __future__ import annotations

import asyncio
import re

import httpx
from playwright.async_api import Page, Response, expect

from tests.console.conftest import Console, screen
from tests.console.steps import set_rate_limit
from tests.responses.upstream import MODEL, ScriptedUpstream

FIRST_LOAD_BUDGET = 250 * 1024  # bytes on the wire, compressed as served


async def first_load_bytes(console: Console) -> tuple[Page, int]:
    """What loading the console transfers: every response's headers and body as sent
    (compressed), as Chromium counted them."""
    sizes: list[int] = []
    page = await console.context.new_page()

    async def measure(response: Response) -> None:
        s = await response.request.sizes()
        sizes.append(s["responseBodySize"] + s["responseHeadersSize"])

    page.on("response", measure)
    await page.goto(f"{console.base}/console/")
    await page.get_by_role("textbox", name="API key").wait_for()
    await page.wait_for_load_state("networkidle")
    await asyncio.sleep(0.2)  # the last size reports
    return page, sum(sizes)


async def test_first_load_is_small_and_stays_on_this_origin(console: Console) -> None:
    page, size = await first_load_bytes(console)
    assert 10_000 < size <= FIRST_LOAD_BUDGET, size
    await screen(page, "sign-in")


async def test_admin_creates_a_project_key_and_limit_then_chats(
    console: Console, upstream: ScriptedUpstream
) -> None:
    page = await console.open()
    await console.sign_in(page, console.tenant.admin_key)
    # The key lives in this tab's session storage only: no cookie, no local storage, and
    # not in the page.
    assert await page.evaluate("localStorage.length") == 0
    assert await page.evaluate("document.cookie") == ""
    assert not await console.context.cookies()
    assert console.tenant.admin_key in await page.evaluate("JSON.stringify(sessionStorage)")
    assert console.tenant.admin_key not in await page.content()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await screen(page, "overview")

    # A project: the form refuses an empty name without asking the server.
    await page.get_by_role("link", name="Projects").click()
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    await page.get_by_role("button", name="Create project").click()
    await expect(page.get_by_text("Project name is required.")).to_be_visible()
    assert not posted
    await page.get_by_role("textbox", name="Project name").fill("Console project")
    await page.get_by_role("button", name="Create project").click()
    link = page.get_by_role("link", name="Console project")
    await expect(link).to_be_visible()
    await screen(page, "projects")
    await link.click()
    await expect(page.get_by_role("heading", name=re.compile("Console project"))).to_be_visible()

    # A key, shown once, with copy; it works with the model API.
    await page.get_by_role("textbox", name="Key name").fill("console key")
    await page.get_by_role("button", name="Create API key").click()
    secret = page.locator("[data-secret]")
    await expect(secret).to_have_text(re.compile(r"^sk-proj-"))
    key = await secret.inner_text()
    await console.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    await screen(page, "project-keys")
    async with httpx.AsyncClient(base_url=console.base) as http:
        models = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL
    await expect(page.get_by_role("cell", name="console key", exact=True)).to_be_visible()

    # A rate limit on the project's model.
    await set_rate_limit(page, MODEL, 60)
    project_id = page.url.split("/projects/")[1].split("/")[0]
    async with httpx.AsyncClient(base_url=console.base) as http:
        limits = await http.get(
            f"/v1/organization/projects/{project_id}/rate_limits",
            headers=console.tenant.admin_headers,
        )
    assert limits.json()["data"][0]["max_requests_per_1_minute"] == 60
    await screen(page, "project-rate-limits")

    # A price for the model in this project: what its calls cost from now on.
    sections = page.get_by_role("navigation", name="Sections")
    await sections.get_by_role("link", name="Budgets").click()
    await page.get_by_role("textbox", name="Model", exact=True).fill(MODEL)
    await page.get_by_role("textbox", name="Input", exact=True).fill("1000")
    await page.get_by_role("textbox", name="Output", exact=True).fill("2000.5")
    await page.get_by_role("button", name="Set price").click()
    await expect(page.get_by_role("cell", name="$2000.5", exact=True)).to_be_visible()
    await screen(page, "project-budgets")

    # The API's error, shown as it sent it: a provider at a loopback address.
    await sections.get_by_role("link", name="Providers").click()
    await page.get_by_role("heading", name="Project providers").wait_for()
    await page.get_by_role("textbox", name="Name", exact=True).fill("local")
    await page.get_by_role("textbox", name="Base URLs (one per line)").fill("ftp://x")
    await page.get_by_role("button", name="Add provider").click()
    await expect(
        page.get_by_text("Each base URL must start with http:// or https://.")
    ).to_be_visible()
    await page.get_by_role("textbox", name="Base URLs (one per line)").fill("http://127.0.0.1:9/v1")
    await page.get_by_role("button", name="Add provider").click()
    await expect(page.get_by_role("alert")).to_contain_text("Base URL not allowed")
    # An alias of the project's model, used in the playground below.
    await page.get_by_role("textbox", name="Alias").fill("fast")
    await page.get_by_role("textbox", name="Model it names").fill(MODEL)
    await page.get_by_role("button", name="Set alias").click()
    await expect(page.get_by_role("cell", name="fast", exact=True)).to_be_visible()
    await screen(page, "project-providers")

    # The new key goes to the playground, which streams the model's answer.
    await sections.get_by_role("link", name="API keys").click()
    await page.get_by_role("textbox", name="Key name").fill("playground key")
    await page.get_by_role("button", name="Create API key").click()
    await page.get_by_role("button", name="Use in playground").click()
    await page.get_by_role("combobox", name="Model").select_option("fast")
    await page.get_by_role("textbox", name="Message").fill("Hello there")
    await page.get_by_role("button", name="Send").click()
    answer = page.locator(".msg.assistant").last
    await expect(answer).to_contain_text("echo: Hello there")
    await expect(answer.get_by_test_id("stats")).to_contain_text("First token after")
    await expect(answer.get_by_test_id("stats")).to_contain_text("input")
    assert upstream.requests[-1]["model"] == MODEL  # the alias, resolved by the gateway
    await screen(page, "playground")

    # The overview's chart counts that call once the ledger has written it (batched).
    await page.get_by_role("link", name="Overview").click()
    for _ in range(40):
        await page.get_by_role("button", name="Refresh").click()
        await page.wait_for_timeout(250)
        if await page.get_by_test_id("usage-requests").inner_text() == "1":
            break
    await expect(page.get_by_test_id("usage-requests")).to_have_text("1")
    tokens, cost = page.locator(".chart").nth(0), page.locator(".chart").nth(1)
    await expect(tokens.locator("svg rect")).to_have_count(1)
    await expect(tokens.locator(".legend")).to_have_text("Console project")
    used = await tokens.locator("svg").get_attribute("data-total")
    assert used is not None and int(used) > 0
    # 10 input and 3 output tokens at $1000 and $2000.50 per million.
    await expect(page.get_by_test_id("cost-total")).to_have_text("$0.0160")
    await expect(cost.locator("svg rect")).to_have_count(1)
    await screen(page, "overview-usage")
    # The same usage by model, then by key.
    await page.get_by_role("combobox", name="Group by").select_option("model")
    await expect(tokens.locator(".legend")).to_have_text(MODEL)
    await expect(tokens.locator("figcaption")).to_have_text("Tokens by model")
    await page.get_by_role("combobox", name="Group by").select_option("api_key_id")
    await expect(tokens.locator(".legend")).to_have_text(re.compile(r"^key_"))
    await expect(page.get_by_test_id("usage-requests")).to_have_text("1")

    # The other screens render (and pass the accessibility check).
    screens = {"Members": "Members", "Admin keys": "Admin keys", "Providers": "Model providers"}
    for name, heading in {**screens, "Limits": "Limits", "Budgets": "Budgets"}.items():
        await page.get_by_role("link", name=name, exact=True).click()
        await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        await screen(page, name.lower().replace(" ", "-"))
    assert key not in await page.content()  # the one-time display is gone

    # Screens whose endpoint this server has (the audit log arrives with issue 14).
    async with httpx.AsyncClient(base_url=console.base) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    audit = "/v1/organization/audit_logs" in paths
    await expect(page.get_by_role("link", name="Audit log")).to_have_count(1 if audit else 0)

    # A change the API refuses, from a select: its message is shown (the last owner stays).
    await page.get_by_role("link", name="Members", exact=True).click()
    await page.get_by_role("combobox", name=re.compile("^Role of")).select_option("reader")
    await expect(page.get_by_role("alert")).to_contain_text("owner")
    await expect(page.get_by_role("combobox", name=re.compile("^Role of"))).to_have_value("owner")


async def test_lists_page_with_the_apis_cursors(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.base) as http:
        for n in range(21):  # with the tenant's own: 22 projects, 20 a page
            created = await http.post(
                "/v1/organization/projects",
                json={"name": f"Project {n:02d}"},
                headers=console.tenant.admin_headers,
            )
            assert created.status_code == 200
    page = await console.open("#/projects")
    await console.sign_in(page, console.tenant.admin_key)
    rows = page.locator("table tbody tr")
    await expect(rows).to_have_count(20)
    first = await rows.first.inner_text()
    await page.get_by_role("button", name="Next").click()
    await expect(rows).to_have_count(2)
    await expect(page.get_by_role("button", name="Next")).to_be_disabled()
    await page.get_by_role("button", name="Previous").click()
    await expect(rows).to_have_count(20)
    assert await rows.first.inner_text() == first
