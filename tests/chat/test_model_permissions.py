"""Project model permissions (OpenAI's `/v1/organization/projects/{id}/model_permissions`):
the admin API's shape and roles, and their enforcement on every model API and `/v1/models`,
together with a key's own `allowed_models`, at once on the instance that made the change and
across instances (at once through Redis, within the cache's TTL without)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from functions.app import create_app
from functions.common.principal import Principal, model_grants
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.responses.params import parse_request
from functions.responses.service import stored_params, stored_principal
from functions.services import identity as identity_module
from functions.services.identity import Identity
from tests.conftest import component
from tests.factories import (
    Tenant,
    bearer,
    create_member,
    create_project,
    create_project_key,
    create_tenant,
)

P = "/v1/organization/projects"
REDIS = "redis://127.0.0.1:6379/0"
MESSAGES = [{"role": "user", "content": "hello"}]


def permissions_path(project_id: str) -> str:
    return f"{P}/{project_id}/model_permissions"


async def set_permissions(
    client: httpx.AsyncClient, t: Tenant, mode: str, model_ids: list[str]
) -> dict[str, Any]:
    r = await client.post(
        permissions_path(t.project_id),
        json={"mode": mode, "model_ids": model_ids},
        headers=t.admin_headers,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def listed(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    r = await client.get("/v1/models", headers=headers)
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


def model_calls(model: str) -> list[tuple[str, dict[str, Any]]]:
    """Every model API, each naming ``model``."""
    return [
        ("/v1/chat/completions", {"model": model, "messages": MESSAGES}),
        ("/v1/chat/completions", {"model": model, "messages": MESSAGES, "stream": True}),
        ("/v1/completions", {"model": model, "prompt": "hello"}),
        ("/v1/embeddings", {"model": model, "input": "hello"}),
        ("/v1/responses", {"model": model, "input": "hello"}),
        ("/v1/responses", {"model": model, "input": "hello", "stream": True}),
        ("/v1/responses", {"model": model, "input": "hello", "background": True}),
    ]


async def assert_like_unknown(
    client: httpx.AsyncClient, headers: dict[str, str], model: str
) -> None:
    """``model`` answers on every model API exactly as a model that does not exist.

    (A background response naming a model that does not exist is queued and fails in the
    worker; a denied model is known at once, so it gets a foreground request's 404.)"""
    for path, body in model_calls(model):
        denied = await client.post(path, json=body, headers=headers)
        foreground = {k: v for k, v in body.items() if k != "background"}
        unknown = await client.post(path, json={**foreground, "model": "no-such"}, headers=headers)
        assert denied.status_code == unknown.status_code == 404, (path, denied.text)
        error, expected = denied.json()["error"], unknown.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model", path
        assert error == {**expected, "message": expected["message"].replace("no-such", model)}
    one = await client.get(f"/v1/models/{model}", headers=headers)
    assert one.status_code == 404 and one.json()["error"]["code"] == "model_not_found"
    assert model not in await listed(client, headers)


async def assert_usable(client: httpx.AsyncClient, headers: dict[str, str], model: str) -> None:
    r = await client.post(
        "/v1/chat/completions", json={"model": model, "messages": MESSAGES}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert (await client.get(f"/v1/models/{model}", headers=headers)).status_code == 200
    assert model in await listed(client, headers)


# --- the grants ----------------------------------------------------------------------------
def test_grants_intersect_a_keys_models_with_the_projects() -> None:
    assert model_grants(None, None, None) == (None, frozenset())
    assert model_grants(["a", "b"], None, None) == (frozenset({"a", "b"}), frozenset())
    assert model_grants(None, "allow_list", ["a"]) == (frozenset({"a"}), frozenset())
    assert model_grants(["a", "b"], "allow_list", ["b", "c"]) == (frozenset({"b"}), frozenset())
    assert model_grants(None, "allow_list", []) == (frozenset(), frozenset())
    assert model_grants(None, "deny_list", ["a"]) == (None, frozenset({"a"}))
    assert model_grants(["a", "b"], "deny_list", ["a"]) == (frozenset({"b"}), frozenset())
    assert model_grants(None, "deny_list", []) == (None, frozenset())
    denying = Principal(
        kind="project_key", organization_id="o", project_id="p", denied_models=frozenset({"a"})
    )
    assert not denying.may_use_model("a") and denying.may_use_model("b")


def test_a_background_response_keeps_the_callers_permissions() -> None:
    """The caller a background run acts as goes through JSON in the `params` column."""
    caller = Principal(
        kind="project_key",
        organization_id="o",
        project_id="p",
        allowed_models=None,
        denied_models=frozenset({"m1"}),
    )
    stored = orjson.loads(
        orjson.dumps(stored_params(parse_request({"model": "m2", "input": "x"}), caller))
    )
    again = stored_principal(stored)
    assert again == caller and not again.may_use_model("m1")
    # Rows queued before model permissions existed had no `denied_models`.
    del stored["principal"]["denied_models"]
    assert stored_principal(stored).denied_models == frozenset()


# --- enforcement ---------------------------------------------------------------------------
async def test_allow_list_restricts_every_model_api(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    assert await listed(client, t.project_headers) == ["m1", "m2"]
    out = await set_permissions(client, t, "allow_list", ["m2", "not-served-yet"])
    assert out == {
        "object": "project.model_permissions",
        "mode": "allow_list",
        "model_ids": ["m2", "not-served-yet"],
    }
    for headers in (t.project_headers, t.user_headers):  # a key and a signed-in user
        assert await listed(client, headers) == ["m2"]
        await assert_like_unknown(client, headers, "m1")  # the built-in model included
        await assert_usable(client, headers, "m2")
    # An empty allow list: no model at all.
    await set_permissions(client, t, "allow_list", [])
    assert await listed(client, t.project_headers) == []
    await assert_like_unknown(client, t.project_headers, "m2")


async def test_deny_list_removes_models(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    await set_permissions(client, t, "deny_list", ["m1"])
    _, member = await create_member(runtime, t)
    for headers in (t.project_headers, t.user_headers, bearer(member)):
        assert await listed(client, headers) == ["m2"]
        await assert_like_unknown(client, headers, "m1")
        await assert_usable(client, headers, "m2")


async def test_combined_with_a_keys_allowed_models(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    both = await create_project_key(runtime, t, allowed_models=["m1", "m2"])
    only_m1 = await create_project_key(runtime, t, allowed_models=["m1"])
    await set_permissions(client, t, "allow_list", ["m2"])
    assert await listed(client, bearer(both)) == ["m2"]
    await assert_usable(client, bearer(both), "m2")
    assert await listed(client, bearer(only_m1)) == []  # the intersection is empty
    await assert_like_unknown(client, bearer(only_m1), "m1")
    await assert_like_unknown(client, bearer(only_m1), "m2")
    await set_permissions(client, t, "deny_list", ["m2"])
    assert await listed(client, bearer(both)) == ["m1"]
    await assert_like_unknown(client, bearer(both), "m2")
    await assert_usable(client, bearer(only_m1), "m1")


async def test_permissions_are_per_project(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    other = await create_project(runtime, t)
    other_key = await create_project_key(runtime, t, project_id=other)
    await set_permissions(client, t, "allow_list", ["m1"])
    assert await listed(client, t.project_headers) == ["m1"]
    assert await listed(client, bearer(other_key)) == ["m1", "m2"]
    in_other = bearer(t.access_token, **{"OpenAI-Project": other})
    assert await listed(client, in_other) == ["m1", "m2"]


async def test_a_change_applies_at_once_on_this_instance(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    identity = component(runtime, Identity)
    identity.keys.ttl = 3600  # nothing expires by itself during the test
    for headers in (t.project_headers, t.user_headers):
        assert await listed(client, headers) == ["m1", "m2"]  # the principals are cached
    await set_permissions(client, t, "deny_list", ["m1"])
    for headers in (t.project_headers, t.user_headers):
        assert await listed(client, headers) == ["m2"]
        await assert_like_unknown(client, headers, "m1")
    r = await client.delete(permissions_path(t.project_id), headers=t.admin_headers)
    assert r.json() == {"object": "project.model_permissions.deleted", "deleted": True}
    for headers in (t.project_headers, t.user_headers):
        await assert_usable(client, headers, "m1")


async def test_a_lookup_racing_a_change_is_not_cached(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A principal read before a change and returned after it is used once, not cached."""
    t = await create_tenant(runtime)
    identity = component(runtime, Identity)
    real_load_key = identity_module.load_key
    loaded, resume = asyncio.Event(), asyncio.Event()

    async def slow_load_key(*args: Any, **kwargs: Any) -> Any:
        found = await real_load_key(*args, **kwargs)
        if not loaded.is_set():  # the first lookup (the racing one) only
            loaded.set()
            await resume.wait()
        return found

    monkeypatch.setattr(identity_module, "load_key", slow_load_key)
    racing = asyncio.create_task(identity.verify_key(t.project_key))
    await asyncio.wait_for(loaded.wait(), 5)  # read with no permissions yet
    await set_permissions(client, t, "deny_list", ["m1"])
    resume.set()
    # The request that raced keeps its answer, but it is not cached.
    assert (await asyncio.wait_for(racing, 5)).may_use_model("m1")
    monkeypatch.setattr(identity_module, "load_key", real_load_key)
    assert not (await identity.verify_key(t.project_key)).may_use_model("m1")


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


async def test_other_instances_follow_at_once_with_redis(settings: Settings) -> None:
    with_redis = settings.model_copy(update={"redis_url": SecretStr(REDIS)})
    async with instance(with_redis) as (a, admin), instance(with_redis) as (b, chat):
        t = await create_tenant(a)
        ib = component(b, Identity)
        ib.keys.ttl = 3600
        assert ib.bus is not None
        await asyncio.wait_for(ib.bus.subscribed.wait(), 5)
        assert await listed(chat, t.project_headers) == ["m1", "m2"]  # cached on b
        await set_permissions(admin, t, "allow_list", ["m1"])
        for _ in range(200):  # the broadcast arrives within milliseconds
            if not ib.keys._entries:
                break
            await asyncio.sleep(0.01)
        assert await listed(chat, t.project_headers) == ["m1"]


async def test_other_instances_follow_within_the_cache_ttl_without_redis(
    settings: Settings,
) -> None:
    async with instance(settings) as (a, admin), instance(settings) as (b, chat):
        t = await create_tenant(a)
        ib = component(b, Identity)
        ib.keys.ttl = 0.2  # stands for the 5 s of KEY_CACHE_TTL_SECONDS
        assert await listed(chat, t.project_headers) == ["m1", "m2"]
        await set_permissions(admin, t, "allow_list", ["m1"])
        await asyncio.sleep(0.25)
        assert await listed(chat, t.project_headers) == ["m1"]


# --- the admin API -------------------------------------------------------------------------
async def test_retrieve_update_delete_in_openais_shape(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    path = permissions_path(t.project_id)
    default = {"object": "project.model_permissions", "mode": "deny_list", "model_ids": []}
    assert (await client.get(path, headers=t.admin_headers)).json() == default
    out = await set_permissions(client, t, "allow_list", ["b", "a", "b"])
    assert out["model_ids"] == ["b", "a"]  # repeats dropped, the order kept
    assert (await client.get(path, headers=t.admin_headers)).json() == out
    replaced = await set_permissions(client, t, "deny_list", ["a"])
    assert replaced == {
        "object": "project.model_permissions",
        "mode": "deny_list",
        "model_ids": ["a"],
    }
    deleted = {"object": "project.model_permissions.deleted", "deleted": True}
    assert (await client.delete(path, headers=t.admin_headers)).json() == deleted
    assert (await client.get(path, headers=t.admin_headers)).json() == default
    again = await client.delete(path, headers=t.admin_headers)
    assert again.json() == {**deleted, "deleted": False}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model_ids": ["a"]}, "mode"),
        ({"mode": "everything", "model_ids": ["a"]}, "mode"),
        ({"mode": "allow_list"}, "model_ids"),
        ({"mode": "allow_list", "model_ids": "a"}, "model_ids"),
        ({"mode": "allow_list", "model_ids": ["a", 1]}, "model_ids"),
        ({"mode": "allow_list", "model_ids": [""]}, "model_ids"),
        ({"mode": "allow_list", "model_ids": ["x" * 257]}, "model_ids"),
        ({"mode": "allow_list", "model_ids": [f"m{i}" for i in range(1001)]}, "model_ids"),
    ],
)
async def test_bad_bodies_are_400s(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any], param: str
) -> None:
    t = await create_tenant(runtime)
    r = await client.post(permissions_path(t.project_id), json=body, headers=t.admin_headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["param"] == param


async def test_organization_owners_change_them_others_only_read(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    path = permissions_path(t.project_id)
    body = {"mode": "deny_list", "model_ids": ["m1"]}
    _, reader = await create_member(runtime, t, org_role="reader", project_role=None)
    _, project_owner = await create_member(runtime, t, org_role="reader", project_role="owner")
    _, member = await create_member(runtime, t, project_role="member")
    for token in (reader, project_owner, member):
        assert (await client.get(path, headers=bearer(token))).status_code == 200
        for method in ("POST", "DELETE"):
            r = await client.request(method, path, json=body, headers=bearer(token))
            assert r.status_code == 403 and r.json()["error"]["type"] == "invalid_request_error"
    # Project keys work only on the model APIs.
    assert (await client.get(path, headers=t.project_headers)).status_code == 403
    assert (await client.post(path, json=body, headers=t.project_headers)).status_code == 403
    # A guest is refused too.
    _, guest = await create_member(runtime, t, project_role="member", guest=True)
    assert (await client.post(path, json=body, headers=bearer(guest))).status_code == 403
    assert await listed(client, t.project_headers) == ["m1", "m2"]  # nothing changed
    # The organization owner, signed in, may; so may an admin key.
    owner = bearer(t.access_token)
    assert (await client.post(path, json=body, headers=owner)).status_code == 200
    assert (await client.delete(path, headers=t.admin_headers)).status_code == 200


async def test_archived_projects_are_read_only(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    other = await create_project(runtime, t)
    archived = await client.post(f"{P}/{other}/archive", headers=t.admin_headers)
    assert archived.status_code == 200
    path = permissions_path(other)
    r = await client.post(
        path, json={"mode": "allow_list", "model_ids": []}, headers=t.admin_headers
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "project_archived"
    assert (await client.get(path, headers=t.admin_headers)).status_code == 200


async def test_another_organizations_project_is_not_found(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t, stranger = await create_tenant(runtime), await create_tenant(runtime)
    path = permissions_path(t.project_id)
    body = {"mode": "allow_list", "model_ids": []}
    for headers in (stranger.admin_headers, bearer(stranger.access_token)):
        for method in ("GET", "POST", "DELETE"):
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    missing = permissions_path("proj_does_not_exist")
    assert (await client.get(missing, headers=t.admin_headers)).status_code == 404
    assert await listed(client, t.project_headers) == ["m1", "m2"]  # untouched
