"""Steps the console tests share: what a person does in the browser to create a project,
a key and a rate limit."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect


async def create_project(page: Page, name: str) -> str:
    """Creates a project from the Projects screen and opens it; its ID."""
    await page.get_by_role("link", name="Projects", exact=True).click()
    await page.get_by_role("textbox", name="Project name").fill(name)
    await page.get_by_role("button", name="Create project").click()
    await page.get_by_role("link", name=name, exact=True).click()
    await expect(page.get_by_role("heading", name=re.compile(re.escape(name)))).to_be_visible()
    return page.url.split("/projects/")[1].split("/")[0]


async def create_key(page: Page, name: str) -> str:
    """Creates an API key on the open project's keys tab; the secret shown once."""
    await page.get_by_role("textbox", name="Key name").fill(name)
    await page.get_by_role("button", name="Create API key").click()
    secret = page.locator("[data-secret]")
    await expect(secret).to_have_text(re.compile(r"^sk-proj-"))
    return await secret.inner_text()


async def set_rate_limit(page: Page, model: str, rpm: int) -> None:
    """Sets the open project's requests per minute on a model."""
    await (
        page.get_by_role("navigation", name="Sections")
        .get_by_role("link", name="Rate limits")
        .click()
    )
    await page.get_by_role("button", name=f"Edit {model}").click()
    await page.get_by_role("textbox", name="Requests per minute").fill(str(rpm))
    await page.get_by_role("button", name="Save limits").click()
    await expect(page.get_by_role("cell", name=f"{rpm} RPM", exact=True)).to_be_visible()
