"""The official MCP Python SDK client against /v1/mcp of the real app on a real port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from functions.common.runtime import Runtime
from functions.services.toolbox import store
from tests.factories import Tenant, bearer
from tests.tools.fakes import FakeSerper


@contextlib.asynccontextmanager
async def connect(url: str, headers: dict[str, str], mode: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers=headers, timeout=10)
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sdk_client_lists_and_calls_tools(
    mcp_url: str, tenant: Tenant, serper: tuple[FakeSerper, str], site: str, mode: str
) -> None:
    """``legacy`` is the initialize handshake (2025-11-25); ``auto`` discovers the 2026 protocol."""
    async with connect(mcp_url, tenant.project_headers, mode) as client:
        assert client.server_info is not None and client.server_info.name == "jan-server"
        if mode == "legacy":
            assert client.protocol_version == "2025-11-25"
            await client.session.send_ping()  # ping exists only before the 2026 protocol
        else:
            assert client.protocol_version == "2026-07-28"
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["google_search", "scrape", "fetch_webpage"]
        search_tool = tools.tools[0]
        assert search_tool.input_schema["required"] == ["q"]
        assert set(search_tool.input_schema["properties"]) == {
            "q", "gl", "hl", "location", "num", "page", "tbs", "autocorrect",
        }  # fmt: skip

        found = await client.call_tool("google_search", {"q": "jan", "tbs": "qdr:d"})
        assert not found.is_error
        assert serper[0].requests[-1][1] == {"q": "jan", "tbs": "qdr:d"}
        assert found.structured_content is not None
        assert found.structured_content["results"][0]["link"] == "https://jan.ai/server"
        text = found.content[0]
        assert isinstance(text, types.TextContent) and "1. Jan Server" in text.text

        page = await client.call_tool("fetch_webpage", {"url": f"{site}/article"})
        assert not page.is_error
        assert page.structured_content is not None
        assert page.structured_content["content"].startswith("# Server-side tools")


async def test_tool_failures_are_tool_errors_not_transport_failures(
    mcp_url: str, tenant: Tenant, serper: tuple[FakeSerper, str], site: str
) -> None:
    serper[0].fail_with = 503
    async with connect(mcp_url, tenant.project_headers, "legacy") as client:
        failed = await client.call_tool("google_search", {"q": "x"})
        assert failed.is_error
        assert "search provider failed (HTTP 503)" in _text(failed)
        private = await client.call_tool("scrape", {"url": f"{site}/to?url=http://10.0.0.1/"})
        assert private.is_error and "private or reserved address" in _text(private)
        bad = await client.call_tool("scrape", {"includeMarkdown": True})
        assert bad.is_error and "Invalid argument url" in _text(bad)
        with pytest.raises(MCPError, match="Unknown tool: nope"):
            await client.call_tool("nope", {})
        await client.session.send_ping()  # the connection is fine after all that


async def test_project_settings_limit_the_tools(
    mcp_url: str, tenant: Tenant, runtime: Runtime
) -> None:
    await store.put_settings(
        runtime.db.writer,
        organization_id=tenant.organization_id,
        project_id=tenant.project_id,
        settings=store.ProjectToolSettings(enabled_tools=frozenset({"fetch"}), daily_call_quota=1),
    )
    async with connect(mcp_url, tenant.user_headers, "legacy") as client:  # a user's JWT
        assert [t.name for t in (await client.list_tools()).tools] == ["scrape", "fetch_webpage"]
        refused = await client.call_tool("google_search", {"q": "x"})
        assert refused.is_error and "not enabled for this project" in _text(refused)
        first = await client.call_tool("scrape", {"url": "http://10.0.0.1/"})
        assert "private" in _text(first)
        second = await client.call_tool("scrape", {"url": "http://10.0.0.1/"})
        assert second.is_error and "used its 1 tool calls for today" in _text(second)


async def test_credentials_are_required(app_url: str, tenant: Tenant) -> None:
    initialize: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=app_url) as http:
        missing = await http.post("/v1/mcp", json=initialize, headers=accept)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"]["code"] == "missing_api_key"
        wrong = await http.post(
            "/v1/mcp", json=initialize, headers={**accept, **bearer("sk-proj-x")}
        )
        assert wrong.status_code == 401
        admin = await http.post(
            "/v1/mcp", json=initialize, headers={**accept, **tenant.admin_headers}
        )
        assert admin.status_code == 403
        ok = await http.post(
            "/v1/mcp", json=initialize, headers={**accept, **tenant.project_headers}
        )
        assert ok.status_code == 200
        assert ok.json()["result"]["serverInfo"]["name"] == "jan-server"
        for method in ("GET", "DELETE"):  # stateless: no stream to open, no session to end
            r = await http.request(method, "/v1/mcp", headers={**accept, **tenant.project_headers})
            assert r.status_code == 405 and r.headers["allow"] == "POST"


def _text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text
