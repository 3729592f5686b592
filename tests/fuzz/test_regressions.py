"""The bugs the fuzzer found, pinned one request each (the fuzzer's cases may drift)."""

from __future__ import annotations

import httpx

from functions.common.runtime import Runtime
from tests.factories import create_tenant


async def test_nul_character_in_stored_text_is_a_400_and_nothing_is_stored(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    created = await client.post(
        "/v1/conversations", headers=tenant.project_headers, json={"metadata": {"k": "a\x00b"}}
    )
    assert created.status_code == 400, created.text
    assert created.json()["error"]["code"] == "invalid_character"
    listed = await client.get("/v1/conversations", headers=tenant.project_headers)
    assert listed.json()["data"] == []

    renamed = await client.post(
        "/v1/organization/projects",
        headers=tenant.admin_headers,
        json={"name": "nul\x00name"},
    )
    assert renamed.status_code == 400, renamed.text
    assert renamed.json()["error"]["code"] == "invalid_character"


async def test_usage_times_beyond_year_9999_and_foreign_cursors_are_400s(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    for query in (
        "start_time=300000000000&end_time=300000000001",  # datetime cannot hold year 11476
        "start_time=1&end_time=2000000000&page=259200000000",  # a cursor past the end
        "start_time=1&end_time=2000000000&page=%C2%B2",  # '²' passes str.isdigit()
    ):
        r = await client.get(
            f"/v1/organization/usage/completions?{query}", headers=tenant.admin_headers
        )
        assert r.status_code == 400, (query, r.text)
        assert r.json()["error"]["param"] in {"start_time", "page"}
