"""Model aliases (Jan extension, `/v1/organization/model_aliases` and per project): the admin
API's shape and roles; resolution before permissions, limits and routing; `/v1/models`
listing each alias with its model; the answer and the usage ledger naming the model that
served; and a change reaching another instance within the catalog's reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from functions.app import create_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.inference.service import Inference
from tests.chat.fakes import FakeUpstream
from tests.conftest import component
from tests.factories import (
    bearer,
    create_member,
    create_project,
    create_project_key,
    create_tenant,
)
from tests.tools.http_server import serve_app

ORG = "/v1/organization/model_aliases"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def project_path(project_id: str) -> str:
    return f"/v1/organization/projects/{project_id}/model_aliases"


async def set_alias(
    client: httpx.AsyncClient, headers: dict[str, str], alias: str, model: str, path: str = ORG
) -> dict[str, Any]:
    r = await client.post(path, json={"alias": alias, "model": model}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def models(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str | None]:
    r = await client.get("/v1/models", headers=headers)
    assert r.status_code == 200, r.text
    return {m["id"]: m.get("jan_alias_of") for m in r.json()["data"]}


async def served(client: httpx.AsyncClient, headers: dict[str, str], model: str) -> str:
    r = await client.post(
        "/v1/chat/completions", json={"model": model, "messages": MESSAGES}, headers=headers
    )
    assert r.status_code == 200, r.text
    name: str = r.json()["model"]
    return name


async def test_admin_api_shape_roles_and_errors(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    made = await set_alias(client, t.admin_headers, "default", "m2")
    assert made["object"] == "organization.model_alias"
    assert (made["id"], made["alias"], made["model"]) == ("default", "default", "m2")
    assert made["created_at"] <= made["updated_at"]
    await set_alias(client, t.admin_headers, "default", "m1")  # retargeted, not doubled
    await set_alias(client, t.admin_headers, "org/b", "m2")  # a slash, as model IDs have
    listed = (await client.get(ORG, headers=t.admin_headers)).json()
    assert [(a["alias"], a["model"]) for a in listed["data"]] == [
        ("default", "m1"),
        ("org/b", "m2"),
    ]
    desc = await client.get(ORG, params={"order": "desc", "limit": 1}, headers=t.admin_headers)
    assert [a["alias"] for a in desc.json()["data"]] == ["org/b"] and desc.json()["has_more"]
    # The project's own, written by the project's owner (not by a member).
    proj = project_path(t.project_id)
    _, owner = await create_member(runtime, t, project_role="owner")
    _, member = await create_member(runtime, t)
    mine = await set_alias(client, bearer(owner), "fast", "m1", proj)
    assert mine["object"] == "project.model_alias"
    r = await client.post(proj, json={"alias": "x", "model": "m1"}, headers=bearer(member))
    assert r.status_code == 403
    listed = (await client.get(proj, headers=bearer(member))).json()["data"]
    assert [a["alias"] for a in listed] == ["fast"]
    # The organization's: owners only; a project key is no admin credential.
    for headers in (bearer(owner), t.project_headers):
        r = await client.post(ORG, json={"alias": "y", "model": "m1"}, headers=headers)
        assert r.status_code in (401, 403), r.text
    # Bad input: clear 400s with the parameter.
    for body, param in [
        ({"model": "m1"}, "alias"),
        ({"alias": "a"}, "model"),
        ({"alias": "", "model": "m1"}, "alias"),
        ({"alias": " a", "model": "m1"}, "alias"),
        ({"alias": "a\r\nx-evil: 1", "model": "m1"}, "alias"),
        ({"alias": "a", "model": 3}, "model"),
        ({"alias": "a" * 257, "model": "m1"}, "alias"),
        ({"alias": "m1", "model": "m1"}, "model"),
        ({"alias": "a", "model": "m1", "extra": 1}, "extra"),
    ]:
        r = await client.post(ORG, json=body, headers=t.admin_headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    # Delete; again is a 404; another organization sees none of it.
    gone = await client.delete(f"{ORG}/org/b", headers=t.admin_headers)
    assert gone.json() == {
        "object": "organization.model_alias.deleted",
        "id": "org/b",
        "deleted": True,
    }
    assert (await client.delete(f"{ORG}/org/b", headers=t.admin_headers)).status_code == 404
    other = await create_tenant(runtime)
    assert (await client.get(ORG, headers=other.admin_headers)).json()["data"] == []
    r = await client.get(proj, headers=other.admin_headers)
    assert r.status_code == 404
    assert await models(client, other.project_headers) == {"m1": None, "m2": None}


async def test_an_alias_serves_its_model_named_in_answer_and_ledger(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    async with serve_app(runtime) as base:
        t = await create_tenant(runtime)
        async with (
            openai.AsyncOpenAI(
                base_url=f"{base}/v1", api_key="-", admin_api_key=t.admin_key, max_retries=0
            ) as admin,
            openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=t.project_key, max_retries=0) as sdk,
        ):
            made = await admin.post(
                "/organization/model_aliases",
                body={"alias": "gpt-4o", "model": "m2"},
                cast_to=httpx.Response,
                options={"headers": {"Authorization": f"Bearer {t.admin_key}"}},
            )
            assert made.status_code == 200
            listed = {m.id: getattr(m, "jan_alias_of", None) async for m in sdk.models.list()}
            assert listed == {"gpt-4o": "m2", "m1": None, "m2": None}
            one = await sdk.models.retrieve("gpt-4o")
            assert (one.id, getattr(one, "jan_alias_of", None)) == ("gpt-4o", "m2")
            answer = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert answer.model == "m2"
            stream = await sdk.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
            assert {c.model for c in chunks if c.choices} == {"m2"}
            assert chunks[-1].usage is not None
            response = await sdk.responses.create(model="gpt-4o", input="hello")
            assert response.output_text and response.model == "m2"
            assert [b["model"] for b in builtin.bodies] == ["m2", "m2", "m2"]
        svc = component(runtime, Inference)
        async with runtime.db.writer.acquire() as conn:
            await svc.usage.flush(conn)
            rows = await conn.fetch("SELECT model, status FROM usage_completions ORDER BY id")
        assert [(r["model"], r["status"]) for r in rows] == [("m2", 200)] * 3


async def test_resolved_before_permissions_and_by_scope(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    await set_alias(client, t.admin_headers, "default", "m1")
    await set_alias(client, t.admin_headers, "m1", "m2")  # takes over a model's name
    await set_alias(client, t.admin_headers, "ghost", "no-such-model")
    h = t.project_headers
    assert await models(client, h) == {"default": "m1", "m1": "m2", "m2": None}
    assert await served(client, h, "default") == "m1"  # one step: not on to m2
    assert await served(client, h, "m1") == "m2"
    r = await client.post(
        "/v1/chat/completions", json={"model": "ghost", "messages": MESSAGES}, headers=h
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "`ghost`" in r.json()["error"]["message"]
    # The project's alias replaces the organization's, for that project only.
    await set_alias(client, t.admin_headers, "default", "m2", project_path(t.project_id))
    other = await create_project(runtime, t)
    other_key = bearer(await create_project_key(runtime, t, project_id=other))
    assert await served(client, h, "default") == "m2"
    assert await served(client, other_key, "default") == "m1"
    # Permissions see the model an alias names: denying m2 hides both aliases of it.
    r = await client.post(
        f"/v1/organization/projects/{t.project_id}/model_permissions",
        json={"mode": "deny_list", "model_ids": ["m2"]},
        headers=t.admin_headers,
    )
    assert r.status_code == 200
    assert await models(client, h) == {}  # default→m2, m1→m2; m2 itself denied
    for name in ("default", "m1", "m2"):
        for path, body in [
            ("/v1/chat/completions", {"model": name, "messages": MESSAGES}),
            ("/v1/responses", {"model": name, "input": "hello"}),
            ("/v1/responses", {"model": name, "input": "hello", "background": True}),
        ]:
            r = await client.post(path, json=body, headers=h)
            assert r.status_code == 404, (path, name, r.text)
            assert f"`{name}`" in r.json()["error"]["message"]
    assert await served(client, other_key, "m1") == "m2"


@asynccontextmanager
async def instance(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = Runtime(settings)
    app = create_app(runtime)
    await runtime.open()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield runtime, client
    finally:
        await runtime.close()


async def test_other_instances_follow_within_the_reload(settings: Settings) -> None:
    async with instance(settings) as (a, admin), instance(settings) as (b, chat):
        t = await create_tenant(a)
        catalog = component(b, Inference).catalog
        h = t.project_headers
        assert await served(chat, h, "m1") == "m1"  # b is up, its catalog loaded
        # A new name applies at once: b reloads on a name it does not know.
        await set_alias(admin, t.admin_headers, "default", "m1")
        catalog._last_reload = 0.0  # as if b's last reload were over 2 s ago
        assert await served(chat, h, "default") == "m1"
        # A retarget applies at b's next reload (every `reload_seconds`, 10 s by default).
        await set_alias(admin, t.admin_headers, "default", "m2")
        assert await served(chat, h, "default") == "m1"
        started = time.monotonic()
        while await served(chat, h, "default") != "m2":
            assert time.monotonic() - started < 11, "b never followed within its reload"
            await asyncio.sleep(0.1)
        catalog.reload_seconds = 0.5  # from b's next reload on
        # A delete too.
        assert (await admin.delete(f"{ORG}/default", headers=t.admin_headers)).status_code == 200
        while (await chat.get("/v1/models/default", headers=h)).status_code != 404:
            assert time.monotonic() - started < 22, "b never followed within its reload"
            await asyncio.sleep(0.1)
