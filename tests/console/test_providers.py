"""Model providers in the browser, where the operator lets providers point at this host
(JAN_PROVIDER_ALLOWED_HOSTS): a provider is added, its endpoints' health shown (the models
each discovered, or none), edited; the organization's aliases and fallbacks set."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from functions.common.settings import Settings
from tests.conftest import make_settings
from tests.console.conftest import Console, screen
from tests.responses.upstream import MODEL, ScriptedUpstream
from tests.tools.fakes import SERPER_KEY, FakeSerper


@pytest.fixture
def settings(
    database_dsn: str, upstream: ScriptedUpstream, serper: tuple[FakeSerper, str]
) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=upstream.url,
        serper_url=serper[1],
        serper_api_key=SERPER_KEY,
        jan_provider_allowed_hosts=("127.0.0.1",),
    )


async def api_get(console: Console, path: str) -> Any:
    async with httpx.AsyncClient(base_url=console.base) as http:
        res = await http.get(path, headers=console.tenant.admin_headers)
    assert res.status_code == 200, res.text
    return res.json()


async def test_providers_their_health_aliases_and_fallbacks(
    console: Console, upstream: ScriptedUpstream
) -> None:
    page = await console.open()
    await console.sign_in(page, console.tenant.admin_key)
    await page.get_by_role("link", name="Providers", exact=True).click()
    await page.get_by_role("textbox", name="Name", exact=True).fill("local")
    await page.get_by_role("combobox", name="Kind").select_option("llamacpp")
    await page.get_by_role("textbox", name="Base URLs (one per line)").fill(
        f"{upstream.url}\nhttp://127.0.0.1:9/v1"
    )
    await page.get_by_role("button", name="Add provider").click()
    row = page.get_by_role("row").filter(has_text="local")
    await expect(row).to_contain_text(f"{upstream.url} — 1 model")  # the live endpoint
    await expect(row).to_contain_text("http://127.0.0.1:9/v1 — nothing discovered")  # dead
    await expect(row).to_contain_text(MODEL)
    providers = (await api_get(console, "/v1/organization/models/providers"))["data"]
    assert [(p["name"], p["kind"], len(p["endpoints"])) for p in providers] == [
        ("local", "llamacpp", 2)
    ]
    await screen(page, "providers-health")

    # Edited: made inactive (the URLs kept when left empty).
    await row.get_by_role("button", name="Edit local").click()
    await row.get_by_role("checkbox", name="Active").uncheck()
    await row.get_by_role("button", name="Save", exact=True).click()
    await expect(row).to_contain_text("inactive")
    provider = (await api_get(console, "/v1/organization/models/providers"))["data"][0]
    assert provider["active"] is False and len(provider["endpoints"]) == 2

    # The organization's alias and fallbacks.
    await page.get_by_role("textbox", name="Alias").fill("house")
    await page.get_by_role("textbox", name="Model it names").fill(MODEL)
    await page.get_by_role("button", name="Set alias").click()
    await expect(page.get_by_role("cell", name="house", exact=True)).to_be_visible()
    await page.get_by_role("textbox", name="Model that may fail").fill(MODEL)
    await page.get_by_role("textbox", name="Fallback models, in order").fill("house, other")
    await page.get_by_role("button", name="Set fallbacks").click()
    await expect(page.get_by_role("cell", name="house other")).to_be_visible()
    aliases = (await api_get(console, "/v1/organization/model_aliases"))["data"]
    assert [(a["alias"], a["model"]) for a in aliases] == [("house", MODEL)]
    fallbacks = (await api_get(console, "/v1/organization/model_fallbacks"))["data"]
    assert [(f["model"], f["fallbacks"]) for f in fallbacks] == [(MODEL, ["house", "other"])]
    await screen(page, "providers-routing")
