"""Each administration screen in the browser changes what the API holds: projects renamed
and archived; service accounts (a key shown once) and project members; model permissions,
the spend limit, token budgets and spend alerts; admin keys, invites with roles, the
organization's defaults and failure policy; a project's tool settings and quota."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.async_api import Page, expect

from functions.common.runtime import Runtime
from tests.console.conftest import Console, screen
from tests.console.steps import create_key, create_project
from tests.factories import create_member
from tests.responses.upstream import MODEL


async def api_get(console: Console, path: str, headers: dict[str, str] | None = None) -> Any:
    async with httpx.AsyncClient(base_url=console.base) as http:
        res = await http.get(path, headers=headers or console.tenant.admin_headers)
    assert res.status_code == 200, res.text
    return res.json()


async def admin_page(console: Console) -> Page:
    page = await console.open()
    await console.sign_in(page, console.tenant.admin_key)
    return page


async def tab(page: Page, name: str) -> None:
    sections = page.get_by_role("navigation", name="Sections")
    await sections.get_by_role("link", name=name, exact=True).click()


async def test_projects_are_renamed_and_archived(console: Console) -> None:
    page = await admin_page(console)
    project_id = await create_project(page, "Old name")
    await page.get_by_role("link", name="Projects", exact=True).click()
    await page.get_by_role("button", name="Rename Old name").click()
    await page.get_by_role("textbox", name="New name").fill("New name")
    await page.get_by_role("button", name="Rename", exact=True).click()
    await expect(page.get_by_role("link", name="New name", exact=True)).to_be_visible()
    project = await api_get(console, f"/v1/organization/projects/{project_id}")
    assert project["name"] == "New name"

    row = page.get_by_role("row").filter(has_text="New name")
    await row.get_by_role("button", name="Archive").click()
    await row.get_by_role("button", name="Yes, archive").click()
    await expect(page.get_by_role("link", name="New name", exact=True)).to_have_count(0)
    project = await api_get(console, f"/v1/organization/projects/{project_id}")
    assert project["status"] == "archived"
    await page.get_by_role("checkbox", name="Show archived projects").check()
    await expect(row.get_by_role("cell", name="archived", exact=True)).to_be_visible()
    await expect(row.get_by_role("button", name="Archive")).to_have_count(0)
    await screen(page, "projects-archived")


async def test_service_accounts_and_project_members(console: Console) -> None:
    page = await admin_page(console)
    project_id = await create_project(page, "Robots")
    base = f"/v1/organization/projects/{project_id}"

    # A service account: its key shown once, with copy, and working.
    await tab(page, "Service accounts")
    await page.get_by_role("textbox", name="Service account name").fill("robot")
    await page.get_by_role("button", name="Create service account").click()
    secret = page.locator("[data-secret]")
    await expect(secret).to_have_text(re.compile(r"^sk-"))
    key = await secret.inner_text()
    await console.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.get_by_role("button", name="Copy").click()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    await expect(page.get_by_role("cell", name="robot", exact=True)).to_be_visible()
    await screen(page, "project-service-accounts")
    models = await api_get(console, "/v1/models", {"Authorization": f"Bearer {key}"})
    assert [m["id"] for m in models["data"]] == [MODEL]
    accounts = await api_get(console, f"{base}/service_accounts")
    assert [a["name"] for a in accounts["data"]] == ["robot"]
    await page.get_by_role("button", name="Done").click()
    assert key not in await page.content()
    row = page.get_by_role("row").filter(has_text="robot")
    await row.get_by_role("button", name="Limits of robot").click()
    await row.get_by_role("textbox", name="Requests per minute").fill("10")
    await row.get_by_role("button", name="Save limits").click()
    await expect(row).to_contain_text("10 RPM")
    accounts = await api_get(console, f"{base}/service_accounts")
    assert accounts["data"][0]["rate_limits"]["max_requests_per_1_minute"] == 10
    await row.get_by_role("button", name="Delete").click()
    await row.get_by_role("button", name="Yes, delete").click()
    await expect(page.get_by_role("cell", name="robot", exact=True)).to_have_count(0)
    assert (await api_get(console, f"{base}/service_accounts"))["data"] == []

    # A member of the organization joins the project, then changes role.
    await tab(page, "Members")
    email = console.tenant.owner_email
    assert (await api_get(console, f"{base}/users"))["data"] == []  # made by a key: nobody
    await page.get_by_role("combobox", name="User").select_option(label=email)
    await page.get_by_role("combobox", name="Project role").select_option("owner")
    await page.get_by_role("button", name="Add member").click()
    await expect(page.get_by_role("cell", name=email, exact=True)).to_be_visible()
    members = await api_get(console, f"{base}/users")
    assert [(u["email"], u["role"]) for u in members["data"]] == [(email, "owner")]
    await page.get_by_role("button", name=f"Role of {email}").click()
    row = page.get_by_role("row").filter(has_text=email)
    await row.get_by_role("combobox", name="Project role").select_option("member")
    await row.get_by_role("button", name="Save role").click()
    await expect(row.get_by_role("cell", name="member", exact=True)).to_be_visible()
    members = await api_get(console, f"{base}/users")
    assert [(u["email"], u["role"]) for u in members["data"]] == [(email, "member")]
    await screen(page, "project-members")


async def test_model_permissions_and_project_budgets(console: Console) -> None:
    page = await admin_page(console)
    project_id = await create_project(page, "Governed")
    base = f"/v1/organization/projects/{project_id}"

    await tab(page, "Model permissions")
    await page.get_by_role("combobox", name="Mode").select_option("allow_list")
    await page.get_by_role("textbox", name="Model IDs (one per line)").fill("other-model")
    await page.get_by_role("button", name="Save permissions").click()
    await expect(page.get_by_text("Only these models:")).to_be_visible()
    permissions = await api_get(console, f"{base}/model_permissions")
    assert (permissions["mode"], permissions["model_ids"]) == ("allow_list", ["other-model"])
    await screen(page, "project-model-permissions")
    await page.get_by_role("button", name="Reset").click()
    await page.get_by_role("button", name="Yes, reset").click()
    await expect(page.get_by_text("Every model its providers serve.")).to_be_visible()
    assert (await api_get(console, f"{base}/model_permissions"))["model_ids"] == []

    # A key's own limits and token budget.
    await tab(page, "API keys")
    await create_key(page, "limited key")
    await page.get_by_role("button", name="Done").click()
    row = page.get_by_role("row").filter(has_text="limited key")
    await row.get_by_role("button", name="Limits of limited key").click()
    await row.get_by_role("textbox", name="Tokens per day", exact=True).fill("20000")
    await row.get_by_role("button", name="Save limits").click()
    await expect(row).to_contain_text("20,000 TPD")
    await row.get_by_role("button", name="Limits of limited key").click()
    await row.get_by_role("textbox", name="Tokens per month (UTC)").fill("300000")
    await row.get_by_role("button", name="Save budgets").click()
    await expect(row).to_contain_text("300,000/month")
    keys = (await api_get(console, f"{base}/api_keys"))["data"]
    assert keys[0]["rate_limits"]["max_tokens_per_1_day"] == 20000
    assert keys[0]["token_budgets"]["tokens_per_month"] == 300000

    await tab(page, "Budgets")
    # Checked before sending: an amount in dollars.
    await page.get_by_role("textbox", name="Limit (USD)").fill("a lot")
    await page.get_by_role("button", name="Set spend limit").click()
    await expect(page.get_by_text("Limit (USD) must be an amount in dollars")).to_be_visible()
    await page.get_by_role("textbox", name="Limit (USD)").fill("12.50")
    await page.get_by_role("button", name="Set spend limit").click()
    await expect(page.get_by_text("$12.50")).to_be_visible()
    assert (await api_get(console, f"{base}/spend_limit"))["threshold_amount"] == 1250
    await page.get_by_role("textbox", name="Tokens per day (UTC)").fill("1000")
    await page.get_by_role("button", name="Save budgets").click()
    await expect(page.get_by_text("1,000/day")).to_be_visible()
    assert (await api_get(console, f"{base}/token_budgets"))["tokens_per_day"] == 1000
    await page.get_by_role("textbox", name="Threshold (USD)").fill("5")
    await page.get_by_role("textbox", name="E-mail recipients or webhook URL").fill(
        "ops@example.test"
    )
    await page.get_by_role("button", name="Add alert").click()
    await expect(page.get_by_role("cell", name="e-mail ops@example.test")).to_be_visible()
    alerts = (await api_get(console, f"{base}/spend_alerts"))["data"]
    assert [a["threshold_amount"] for a in alerts] == [500]
    await screen(page, "project-spend")


async def test_admin_keys_invites_and_organization_limits(console: Console) -> None:
    page = await admin_page(console)

    # An admin key, shown once; it works until deleted.
    await page.get_by_role("link", name="Admin keys", exact=True).click()
    await page.get_by_role("textbox", name="Name", exact=True).fill("second admin")
    await page.get_by_role("button", name="Create admin key").click()
    secret = page.locator("[data-secret]")
    await expect(secret).to_have_text(re.compile(r"^sk-admin-"))
    key = await secret.inner_text()
    headers = {"Authorization": f"Bearer {key}"}
    await api_get(console, "/v1/organization/projects", headers)
    await page.get_by_role("button", name="Done").click()
    await screen(page, "admin-keys-created")
    row = page.get_by_role("row").filter(has_text="second admin")
    await row.get_by_role("button", name="Delete").click()
    await row.get_by_role("button", name="Yes, delete").click()
    await expect(page.get_by_role("cell", name="second admin", exact=True)).to_have_count(0)
    async with httpx.AsyncClient(base_url=console.base) as http:
        refused = await http.get("/v1/organization/projects", headers=headers)
    assert refused.status_code == 401

    # An invite with a role; the e-mail checked before sending.
    await page.get_by_role("link", name="Members", exact=True).click()
    await page.get_by_role("textbox", name="E-mail", exact=True).fill("not an address")
    await page.get_by_role("button", name="Invite", exact=True).click()
    await expect(page.get_by_text("E-mail must be an e-mail address.")).to_be_visible()
    await page.get_by_role("textbox", name="E-mail", exact=True).fill("new.person@example.test")
    await page.get_by_role("combobox", name="Role", exact=True).select_option("reader")
    await page.get_by_role("button", name="Invite", exact=True).click()
    invite = page.get_by_role("row").filter(has_text="new.person@example.test")
    await expect(invite.get_by_role("cell", name="reader", exact=True)).to_be_visible()
    invites = (await api_get(console, "/v1/organization/invites"))["data"]
    assert [(i["email"], i["role"]) for i in invites] == [("new.person@example.test", "reader")]
    await screen(page, "members-invited")
    await invite.get_by_role("button", name="Delete").click()
    await invite.get_by_role("button", name="Yes, delete").click()
    await expect(invite).to_have_count(0)
    assert (await api_get(console, "/v1/organization/invites"))["data"] == []

    # The organization's default per model, and the failure policy.
    await page.get_by_role("link", name="Limits", exact=True).click()
    await page.get_by_role("button", name=f"Edit {MODEL}").click()
    await page.get_by_role("textbox", name="Tokens per minute").fill("5000")
    await page.get_by_role("button", name="Save limits").click()
    await expect(page.get_by_role("cell", name="5,000 TPM", exact=True)).to_be_visible()
    defaults = (await api_get(console, "/v1/organization/rate_limits"))["data"]
    assert [(d["model"], d["max_tokens_per_1_minute"]) for d in defaults] == [(MODEL, 5000)]
    await page.get_by_role("combobox", name="Failure mode").select_option("closed")
    await page.get_by_role("button", name="Save policy").click()
    await expect(page.get_by_text(re.compile("Now: closed"))).to_be_visible()
    policy = await api_get(console, "/v1/organization/rate_limit_policy")
    assert policy["failure_mode"] == "closed"
    await screen(page, "limits-set")

    # The organization's spend limit.
    await page.get_by_role("link", name="Budgets", exact=True).click()
    await page.get_by_role("textbox", name="Limit (USD)").fill("100")
    await page.get_by_role("button", name="Set spend limit").click()
    await expect(page.get_by_text("$100.00")).to_be_visible()
    limit = await api_get(console, "/v1/organization/spend_limit")
    assert limit["threshold_amount"] == 10000


async def test_tool_settings_and_quota(console: Console) -> None:
    # A project key may read its project's tool settings, not change them: the API says so.
    page = await console.open()
    await console.sign_in(page, console.tenant.project_key)
    await page.get_by_role("link", name="Tools").click()
    await expect(page.get_by_text(re.compile(r"calls today of 1,000\."))).to_be_visible()
    await page.get_by_role("button", name="Save tool settings").click()
    await expect(page.get_by_role("alert")).to_contain_text("Only project owners")
    await page.get_by_role("button", name="Sign out").click()

    # A guest owns its project: it turns web search off and lowers its daily quota.
    await page.get_by_role("button", name="Continue as a guest").click()
    await page.get_by_role("link", name="Tools").click()
    await page.get_by_role("checkbox", name="Web search").uncheck()
    await page.get_by_role("textbox", name=re.compile("^Daily call quota")).fill("50")
    await page.get_by_role("button", name="Save tool settings").click()
    await expect(page.get_by_text(re.compile(r"calls today of 50\."))).to_be_visible()
    session = await page.evaluate("JSON.parse(sessionStorage.getItem('jan.console.session'))")
    headers = {
        "Authorization": f"Bearer {session['token']}",
        "OpenAI-Project": session["project"],
    }
    settings = await api_get(console, "/v1/mcp/settings", headers)
    assert settings["enabled_tools"] == ["fetch"]
    assert settings["daily_call_quota"] == 50
    await screen(page, "tools-set")


async def test_members_change_role_limits_and_leave(console: Console, runtime: Runtime) -> None:
    user_id, _ = await create_member(runtime, console.tenant, org_role="reader")
    user = await api_get(console, f"/v1/organization/users/{user_id}")
    email = user["email"]
    page = await admin_page(console)
    await page.get_by_role("link", name="Members", exact=True).click()
    role = page.get_by_role("combobox", name=f"Role of {email}")
    await expect(role).to_have_value("reader")
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/users/{user_id}")
    ) as changed:
        await role.select_option("owner")
    assert (await changed.value).ok
    row = page.get_by_role("row").filter(has_text=email)
    assert (await api_get(console, f"/v1/organization/users/{user_id}"))["role"] == "owner"
    await expect(role).to_have_value("owner")

    await row.get_by_role("button", name="Limits", exact=True).click()
    await row.get_by_role("textbox", name="Requests per minute").fill("5")
    await row.get_by_role("button", name="Save limits").click()
    await expect(row).to_contain_text("5 RPM")
    user = await api_get(console, f"/v1/organization/users/{user_id}")
    assert user["rate_limits"]["max_requests_per_1_minute"] == 5
    await screen(page, "members-roles")

    await row.get_by_role("button", name="Remove").click()
    await row.get_by_role("button", name="Yes, remove").click()
    await expect(page.get_by_role("cell", name=email, exact=True)).to_have_count(0)
    users = (await api_get(console, "/v1/organization/users"))["data"]
    assert [u["email"] for u in users] == [console.tenant.owner_email]
