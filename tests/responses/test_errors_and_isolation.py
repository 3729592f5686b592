"""Bad input gets OpenAI-style errors; nothing crosses users or tenants; store:false keeps
nothing; upstream failures end a stream cleanly."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from functions.common.runtime import Runtime
from tests.conversations.tenants import Tenant
from tests.responses.helpers import create, sse_events
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream


async def _error(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    r = await client.post("/v1/responses", json=body, headers=headers)
    return r.status_code, r.json()["error"]


async def test_bad_input_is_answered_with_openai_errors(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    conv = (await client.post("/v1/conversations", json={}, headers=tenant.other_user)).json()
    theirs = await create(client, tenant.other_user, input="mine")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"input": "x"}, 400, "model"),
        ({"model": MODEL}, 400, "input"),
        ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role"),
        (
            {"model": MODEL, "input": [{"type": "function_call_output", "output": "o"}]},
            400,
            "input[0].call_id",
        ),
        ({"model": MODEL, "input": "x", "temperature": 9}, 400, "temperature"),
        ({"model": MODEL, "input": "x", "tools": [{"type": "teleport"}]}, 400, "tools[0].type"),
        ({"model": MODEL, "input": "x", "tools": [{"type": "function"}]}, 400, "tools[0].name"),
        ({"model": MODEL, "input": "x", "background": True, "stream": True}, 400, "stream"),
        ({"model": MODEL, "input": "x", "background": True, "store": False}, 400, "store"),
        (
            {"model": MODEL, "input": "x", "conversation": "conv_x", "previous_response_id": "r"},
            400,
            "previous_response_id",
        ),
        ({"model": MODEL, "input": "x", "conversation": "conv_nope"}, 404, "conversation"),
        ({"model": MODEL, "input": "x", "conversation": conv["id"]}, 404, "conversation"),
        (
            {"model": MODEL, "input": "x", "previous_response_id": theirs["id"]},
            404,
            "previous_response_id",
        ),
    ]
    sent_before = len(upstream.requests)
    for body, status, param in cases:
        code, error = await _error(client, tenant.user, body)
        assert (code, error["param"]) == (status, param), (body, error)
        assert error["type"] == "invalid_request_error" and error["message"]
    assert len(upstream.requests) == sent_before  # refused before reaching the model

    upstream.script.append(Reply(status=404, error="The model 'nope' does not exist"))
    code, error = await _error(client, tenant.user, {"model": "nope", "input": "x"})
    assert code == 404 and "does not exist" in error["message"]


async def test_nothing_crosses_users_or_tenants(
    client: httpx.AsyncClient, tenant: Tenant, stranger: Tenant
) -> None:
    resp = await create(client, tenant.user, input="private", background=False)
    base = f"/v1/responses/{resp['id']}"
    for headers in (tenant.other_user, stranger.user, stranger.key):
        for method, path in (
            ("GET", base),
            ("GET", f"{base}/input_items"),
            ("POST", f"{base}/cancel"),
            ("DELETE", base),
        ):
            r = await client.request(method, path, headers=headers)
            assert r.status_code == 404, (method, path, r.text)
    # The project key sees the project's responses and may build on them.
    assert (await client.get(base, headers=tenant.key)).status_code == 200
    chained = await create(client, tenant.key, input="more", previous_response_id=resp["id"])
    assert chained["previous_response_id"] == resp["id"]
    assert (await client.get(base, headers=tenant.user)).json()["output"] == resp["output"]


async def test_a_users_history_never_follows_a_chain_into_another_users_response(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, upstream: ScriptedUpstream
) -> None:
    secret = await create(client, tenant.user, input="the owner's secret")
    theirs = await create(client, tenant.other_user, input="mine")
    # The API never links them (previous_response_id must be the caller's own); a row
    # that does anyway must not hand the owner's items to the other user.
    await runtime.db.writer.execute(
        "UPDATE responses SET previous_response_id = $1 WHERE id = $2", secret["id"], theirs["id"]
    )
    await create(client, tenant.other_user, input="next", previous_response_id=theirs["id"])
    shown = orjson.dumps(upstream.requests[-1]["messages"]).decode()
    assert "mine" in shown and "secret" not in shown


async def test_store_false_persists_nothing(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    resp = await create(client, tenant.user, input="forget me", store=False)
    assert resp["status"] == "completed" and resp["store"] is False
    assert (await client.get(f"/v1/responses/{resp['id']}", headers=tenant.user)).status_code == 404
    for table in ("responses", "response_input_items", "conversation_items"):
        count = await runtime.db.writer.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
        assert count == 0, table
    code, error = await _error(
        client,
        tenant.user,
        {"model": MODEL, "input": "x", "store": False, "conversation": "conv_x"},
    )
    assert code == 400 and error["param"] == "store"


async def test_upstream_failure_mid_stream_ends_with_failed_events(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.script.append(Reply(text="a b c d", break_after=2))
    r = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "x", "stream": True}, headers=tenant.user
    )
    events = sse_events(r.text)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"]
    stored = (await client.get(f"/v1/responses/{failed['id']}", headers=tenant.user)).json()
    assert stored["status"] == "failed"

    upstream.script.append(Reply(text="a b c d", break_after=2))
    plain = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "x"}, headers=tenant.user
    )
    assert plain.status_code == 502 and plain.json()["error"]["type"] == "upstream_error"
