"""The audit log in the browser: what an admin just did there (a project, a key, a rate
limit) is listed with its actor and type; OpenAI's filters (event types, actors, projects,
dates) narrow the list; a long list pages with the API's cursors."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.console.conftest import Console, screen
from tests.console.steps import create_key, create_project, set_rate_limit
from tests.responses.upstream import MODEL


async def local_day(page: Page, days_from_today: int = 0) -> str:
    """The browser's local date (YYYY-MM-DD), as the screen's date filters read it."""
    return str(
        await page.evaluate(
            "(n) => { const d = new Date(); d.setDate(d.getDate() + n);"
            " return d.toLocaleDateString('en-CA'); }",
            days_from_today,
        )
    )


async def filter_by(page: Page, **fields: str) -> None:
    """Fills the filter form (every field not given emptied) and applies it."""
    labels = {
        "event_types": "Event types",
        "actor_ids": "Actor IDs",
        "actor_emails": "Actor e-mails",
        "project_ids": "Project IDs",
        "resource_ids": "Resource IDs",
        "since": "From (YYYY-MM-DD)",
        "until": "To (YYYY-MM-DD)",
    }
    for name, label in labels.items():
        await page.get_by_role("textbox", name=label, exact=True).fill(fields.get(name, ""))
    await page.get_by_role("button", name="Filter", exact=True).click()


async def test_what_the_admin_did_is_in_the_audit_log(console: Console) -> None:
    page = await console.open()
    await console.sign_in(page, console.tenant.admin_key)
    project_id = await create_project(page, "Audited project")
    secret = await create_key(page, "audited key")
    await set_rate_limit(page, MODEL, 30)
    async with httpx.AsyncClient(base_url=console.base) as http:
        admin_keys = await http.get(
            "/v1/organization/admin_api_keys", headers=console.tenant.admin_headers
        )
        keys = await http.get(
            f"/v1/organization/projects/{project_id}/api_keys",
            headers=console.tenant.admin_headers,
        )
    admin_key_id = admin_keys.json()["data"][0]["id"]
    key_id = keys.json()["data"][0]["id"]

    await page.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    rows = page.locator("table tbody tr")
    # Newest first: the limit, the key, the project; each by the admin key of the owner.
    await expect(rows).to_have_count(3)
    for row, kind in zip(
        await rows.all(), ("rate_limit.updated", "api_key.created", "project.created"), strict=True
    ):
        await expect(row.locator("td").nth(1)).to_have_text(kind)
        actor = row.locator("td").nth(2)
        await expect(actor).to_contain_text(admin_key_id)
        await expect(actor).to_contain_text(console.tenant.owner_email)
        await expect(row.locator("td").nth(3)).to_have_text("Audited project")
    # The key's event names it, never its secret.
    await rows.nth(1).get_by_text("Details").click()
    await expect(rows.nth(1).locator("pre")).to_contain_text(key_id)
    assert secret not in await page.content()
    await screen(page, "audit-log")

    # Each filter narrows the list, as the API filters.
    await filter_by(page, event_types="api_key.created")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("td").nth(1)).to_have_text("api_key.created")
    await filter_by(page, event_types="project.created, rate_limit.updated")
    await expect(rows).to_have_count(2)
    await filter_by(page, resource_ids=key_id)
    await expect(rows).to_have_count(1)
    await filter_by(page, project_ids=console.tenant.project_id)
    await expect(page.get_by_text("No events match.")).to_be_visible()
    await filter_by(page, project_ids=project_id)
    await expect(rows).to_have_count(3)
    await filter_by(page, actor_emails="someone.else@example.test")
    await expect(page.get_by_text("No events match.")).to_be_visible()
    await filter_by(page, actor_emails=console.tenant.owner_email)
    await expect(rows).to_have_count(3)
    await filter_by(page, actor_ids=admin_key_id)
    await expect(rows).to_have_count(3)
    await filter_by(page, until=await local_day(page, -1))
    await expect(page.get_by_text("No events match.")).to_be_visible()
    today = await local_day(page)
    await filter_by(page, since=today, until=today, event_types="rate_limit.updated")
    await expect(rows).to_have_count(1)
    await screen(page, "audit-log-filtered")

    # A malformed date is refused before asking the server; an event type the API refuses
    # shows its message.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "audit_logs" in r.url else None)
    await filter_by(page, since="yesterday")
    await expect(page.get_by_text("Use a date such as 2026-01-31.")).to_be_visible()
    assert not asked
    await filter_by(page, event_types="not-a-type")
    await expect(page.get_by_role("alert")).to_contain_text("'not-a-type' is not an event type.")


async def test_a_long_audit_log_pages_with_the_apis_cursors(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.base) as http:
        for n in range(23):  # 23 events: 20 a page
            created = await http.post(
                "/v1/organization/projects",
                json={"name": f"Project {n:02d}"},
                headers=console.tenant.admin_headers,
            )
            assert created.status_code == 200
    page = await console.open("#/audit-log")
    await console.sign_in(page, console.tenant.admin_key)
    rows = page.locator("table tbody tr")
    await expect(rows).to_have_count(20)
    await expect(rows.first.locator("td").nth(3)).to_have_text("Project 22")
    await page.get_by_role("button", name="Next").click()
    await expect(rows).to_have_count(3)
    await expect(rows.last.locator("td").nth(3)).to_have_text("Project 00")
    await expect(page.get_by_role("button", name="Next")).to_be_disabled()
    await page.get_by_role("button", name="Previous").click()
    await expect(rows).to_have_count(20)
    await expect(rows.first.locator("td").nth(3)).to_have_text("Project 22")
    # A filter starts again from the first page.
    await page.get_by_role("button", name="Next").click()
    await expect(rows).to_have_count(3)
    await filter_by(page, event_types="project.created")
    await expect(rows).to_have_count(20)
    await expect(page.get_by_role("button", name="Previous")).to_be_disabled()
