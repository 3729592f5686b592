"""Per-project tool enablement and the daily tool-call quota."""

from __future__ import annotations

import asyncio

from functions.common.principal import Principal
from functions.services.toolbox import store
from functions.services.toolbox.toolbox import ToolBox
from tests.tools.conftest import MakeBox


async def _configure(
    box: ToolBox, principal: Principal, *, enabled: set[str] | None, quota: int | None
) -> None:
    assert principal.project_id is not None
    await store.put_settings(
        box.runtime.db.writer,
        organization_id=principal.organization_id,
        project_id=principal.project_id,
        settings=store.ProjectToolSettings(
            enabled_tools=None if enabled is None else frozenset(enabled), daily_call_quota=quota
        ),
    )


async def test_disabled_family_is_hidden_and_refused(make_box: MakeBox) -> None:
    box, principal = await make_box()
    assert [s.name for s in await box.available(principal)] == [
        "google_search",
        "scrape",
        "fetch_webpage",
    ]
    await _configure(box, principal, enabled={"fetch"}, quota=None)
    assert [s.name for s in await box.available(principal)] == ["scrape", "fetch_webpage"]
    result = await box.call(principal, "google_search", {"q": "x"})
    assert result.is_error and "not enabled for this project" in result.text


async def test_daily_quota_is_enforced_per_project(make_box: MakeBox) -> None:
    box, principal = await make_box(jan_tool_calls_per_day=3)
    _, other = await make_box(jan_tool_calls_per_day=3)
    # Calls count whether or not they succeed (no search provider is configured here).
    results = await asyncio.gather(
        *(box.call(principal, "google_search", {"q": "x"}) for _ in range(5))
    )
    refused = [r for r in results if "used its 3 tool calls" in r.text]
    assert len(refused) == 2
    assert principal.project_id is not None
    assert (
        await store.calls_today(
            box.runtime.db.writer,
            organization_id=principal.organization_id,
            project_id=principal.project_id,
        )
        == 3
    )
    fresh = await box.call(other, "google_search", {"q": "x"})
    assert "not configured" in fresh.text  # another project's budget is untouched


async def test_project_quota_overrides_the_default(make_box: MakeBox) -> None:
    # Stored project values count only within the operator's ceiling; 0: none.
    box, principal = await make_box(jan_tool_calls_per_day=1, jan_tool_calls_per_day_max=0)
    await _configure(box, principal, enabled=None, quota=0)  # 0: unlimited
    for _ in range(3):
        assert "tool calls" not in (await box.call(principal, "google_search", {"q": "x"})).text
    await _configure(box, principal, enabled=None, quota=4)
    results = [await box.call(principal, "google_search", {"q": "x"}) for _ in range(2)]
    assert "used its 4 tool calls" in results[-1].text


async def test_unknown_tool_and_projectless_caller(make_box: MakeBox) -> None:
    box, principal = await make_box()
    unknown = await box.call(principal, "rm_rf", {})
    assert unknown.is_error and "Unknown tool 'rm_rf'" in unknown.text
    admin = Principal(kind="admin_key", organization_id=principal.organization_id, project_id=None)
    refused = await box.call(admin, "google_search", {"q": "x"})
    assert refused.is_error and "within a project" in refused.text
