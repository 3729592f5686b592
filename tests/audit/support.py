"""Shared pieces of the audit tests: reading the log as the API shows it and as stored."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from functions.common.runtime import Runtime
from functions.services import tenancy
from tests.factories import bearer

URL = "/v1/organization/audit_logs"


async def events(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    """Every event the API lists for these credentials and filters, newest first, page by
    page (``limit`` 100)."""
    out: list[dict[str, Any]] = []
    after = None
    while True:
        query = {"limit": 100, **params} | ({"after": after} if after else {})
        r = await client.get(URL, params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["last_id"]


async def rows(runtime: Runtime) -> list[asyncpg.Record]:
    """Every stored event, oldest first."""
    return await runtime.db.writer.fetch("SELECT * FROM audit_logs ORDER BY id")


async def operator_headers(runtime: Runtime, organization_id: str) -> dict[str, str]:
    """An operator's admin key for ``organization_id`` (owned by no user: acts as owner)."""
    assert runtime.settings.apikey_secret is not None
    key = await tenancy.create_api_key(
        runtime.db.writer,
        apikey_secret=runtime.settings.apikey_secret.get_secret_value().encode(),
        kind="admin",
        organization_id=organization_id,
        name="operator",
    )
    return bearer(key.plaintext)
