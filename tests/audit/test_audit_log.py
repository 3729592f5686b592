"""The audit log in OpenAI's shape: actors (a session's user, address and user agent; an API
key and its owner), per-type payloads without secrets, OpenAI's filters and cursors, the
official SDK's admin client, owners only, one organization's events only, written in the
change's own transaction, and append-only in the database."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
import openai
import pytest
from openai.types.admin.organization.audit_log_list_params import EffectiveAt

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services import tenancy
from tests.audit.support import URL, events, operator_headers, rows
from tests.conftest import make_settings
from tests.factories import bearer, create_member, create_tenant
from tests.tools.http_server import serve_app

CLOSED_UPSTREAM = "http://127.0.0.1:9/v1"  # nothing listens: discovery fails fast
WHERE = {"User-Agent": "audit-test/1.0", "X-Forwarded-For": "6.6.6.6, 198.51.100.7"}


@pytest.fixture(name="settings")
def proxied(database_dsn: str) -> Settings:
    """The test client (127.0.0.1) is a trusted proxy; providers may use loopback."""
    return make_settings(
        database_dsn,
        jan_trusted_proxies="127.0.0.1/32",
        jan_provider_allowed_hosts=("127.0.0.1",),
    )


def by_type(found: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in found if e["type"] == type_]


async def test_events_name_the_actor_the_object_and_what_changed_never_a_secret(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    session = tenant.user_headers | WHERE
    made = await client.post("/v1/organization/projects", json={"name": "p2"}, headers=session)
    project_id = made.json()["id"]
    admin_key = await client.post(
        "/v1/organization/admin_api_keys", json={"name": "ops"}, headers=tenant.admin_headers
    )
    project_key = await client.post(
        f"/v1/organization/projects/{project_id}/api_keys",
        json={"name": "svc", "allowed_models": ["m1"]},
        headers=tenant.admin_headers | {"User-Agent": "sdk/2"},
    )
    provider = await client.post(
        "/v1/organization/models/providers",
        json={
            "name": "up",
            "kind": "openai",
            "base_url": CLOSED_UPSTREAM,
            "api_key": "sk-upstream-very-secret",
        },
        headers=tenant.admin_headers,
    )
    changed = await client.post(
        f"/v1/organization/models/providers/{provider.json()['id']}",
        json={"api_key": "sk-upstream-rotated-secret", "active": False},
        headers=tenant.admin_headers,
    )
    hook = "http://127.0.0.1:9/hooks/T0001/B0001/slack-style-secret-path"
    alert = await client.post(
        "/v1/organization/spend_alerts",
        json={
            "threshold_amount": 100,
            "currency": "USD",
            "interval": "month",
            "notification_channel": {"type": "webhook", "url": hook},
        },
        headers=tenant.admin_headers,
    )
    made_all = (made, admin_key, project_key, provider, changed, alert)
    assert {r.status_code for r in made_all} == {200}, [r.text for r in made_all]
    keys_listed = await client.get("/v1/organization/admin_api_keys", headers=tenant.admin_headers)
    admin_key_id = keys_listed.json()["data"][0]["id"]  # the tenant's own, which made them

    listed = await client.get(URL, headers=tenant.admin_headers)
    found = listed.json()["data"]
    owner = {"id": tenant.owner_user_id, "email": tenant.owner_email}
    [created] = by_type(found, "project.created")
    assert created["actor"] == {
        "type": "session",
        "session": {"user": owner, "ip_address": "198.51.100.7", "user_agent": "audit-test/1.0"},
    }
    assert created["project"] == {"id": project_id, "name": "p2"}
    assert created["project.created"] == {"id": project_id, "data": {"name": "p2"}}
    assert abs(created["effective_at"] - time.time()) < 60
    assert created["id"].startswith("audit_log-")

    keys = by_type(found, "api_key.created")
    assert [k["api_key.created"]["id"] for k in keys] == [
        project_key.json()["id"],
        admin_key.json()["id"],
    ]  # newest first
    assert keys[0]["actor"] == {
        "type": "api_key",
        "api_key": {
            "id": admin_key_id,
            "type": "user",
            "user": owner,
            "ip_address": "127.0.0.1",  # no X-Forwarded-For: the proxy itself
            "user_agent": "sdk/2",
        },
    }
    assert keys[0]["project"]["id"] == project_id
    assert keys[0]["api_key.created"]["data"] == {
        "object": "organization.project.api_key",
        "name": "svc",
        "allowed_models": ["m1"],
        "expires_at": None,
    }
    [update] = by_type(found, "model_provider.updated")
    assert update["model_provider.updated"]["changes_requested"] == {
        "active": False,
        "has_api_key": True,
    }
    [new_provider] = by_type(found, "model_provider.created")
    assert new_provider["model_provider.created"]["data"]["base_urls"] == [CLOSED_UPSTREAM]
    [spend_alert] = by_type(found, "spend_alert.created")
    channel = spend_alert["spend_alert.created"]["data"]["notification_channel"]
    assert channel == {"type": "webhook", "url": "http://127.0.0.1:9/…"}
    # Keys' values (shown once), provider credentials, a webhook's path and signing secret
    # never reach the log.
    text = listed.text
    for secret in (
        admin_key.json()["value"],
        project_key.json()["value"],
        "sk-upstream-very-secret",
        "sk-upstream-rotated-secret",
        "slack-style-secret-path",
        alert.json()["notification_channel"]["secret"],
    ):
        assert secret not in text
    stored = " ".join(str(dict(r)) for r in await rows(runtime))
    assert "secret" not in stored and "sk-" not in stored and "whsec_" not in stored


async def test_filters_and_cursors(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await create_tenant(runtime)
    admin = tenant.admin_headers
    projects = []
    for n in range(5):
        r = await client.post("/v1/organization/projects", json={"name": f"p{n}"}, headers=admin)
        projects.append(r.json()["id"])
    await client.post(f"/v1/organization/projects/{projects[0]}", json={"name": "x"}, headers=admin)
    mine = {"name": "mine"}
    await client.post("/v1/organization/projects", json=mine, headers=tenant.user_headers)
    everything = await events(client, admin)
    assert len(everything) == 7
    assert [e["type"] for e in everything].count("project.created") == 6
    assert everything == sorted(everything, key=lambda e: e["id"], reverse=True)

    # Cursors: `after` pages to older events, `before` back to newer ones.
    pages, after = [], None
    while True:
        query = {"limit": 3} | ({"after": after} if after else {})
        r = (await client.get(URL, params=query, headers=admin)).json()
        pages.append([e["id"] for e in r["data"]])
        if not r["has_more"]:
            break
        after = r["last_id"]
    assert pages == [[e["id"] for e in everything][i : i + 3] for i in (0, 3, 6)]
    back = (await client.get(URL, params={"limit": 2, "before": pages[2][0]}, headers=admin)).json()
    assert [e["id"] for e in back["data"]] == pages[1][1:3] and back["has_more"] is True

    async def ids(**params: Any) -> list[str]:
        return [e["id"] for e in await events(client, admin, **params)]

    updated = [e["id"] for e in everything if e["type"] == "project.updated"]
    assert await ids(**{"event_types[]": ["project.updated"]}) == updated
    assert await ids(**{"event_types[]": ["project.updated", "project.created"]}) == [
        e["id"] for e in everything
    ]
    assert len(await ids(**{"project_ids[]": [projects[0]]})) == 2
    assert len(await ids(**{"resource_ids[]": [projects[0], projects[1]]})) == 3
    key_id = everything[-1]["actor"]["api_key"]["id"]
    assert len(await ids(**{"actor_ids[]": [key_id]})) == 6  # the admin key's own
    assert len(await ids(**{"actor_ids[]": [tenant.owner_user_id]})) == 7  # and the session's
    assert len(await ids(**{"actor_emails[]": [tenant.owner_email.upper()]})) == 7
    assert await ids(**{"actor_emails[]": ["nobody@example.test"]}) == []
    now = int(time.time())
    assert len(await ids(**{"effective_at[gte]": now - 60, "effective_at[lte]": now + 1})) == 7
    assert await ids(**{"effective_at[gt]": now + 60}) == []
    assert await ids(**{"effective_at[lt]": now - 60}) == []

    for bad in (
        {"effective_at[gt]": "yesterday"},
        {"effective_at[lt]": -1},
        {"event_types[]": "DROP TABLE"},
        {"after": "audit_log-nope"},
        {"before": "audit_log-nope"},
        {"limit": 0},
        {"actor_ids[]": ["x"] * 101},
    ):
        r = await client.get(URL, params=bad, headers=admin)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"


async def test_only_owners_read_and_only_their_organization(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    other = await create_tenant(runtime)
    await client.post("/v1/organization/projects", json={"name": "a"}, headers=tenant.admin_headers)
    await client.post("/v1/organization/projects", json={"name": "b"}, headers=other.admin_headers)
    _, reader_token = await create_member(runtime, tenant, org_role="reader")
    _, member_token = await create_member(runtime, tenant, project_role="owner")
    for headers in (bearer(reader_token), bearer(member_token), tenant.project_headers):
        r = await client.get(URL, headers=headers)
        assert r.status_code == 403, r.text
    assert (await client.get(URL)).status_code == 401
    mine = await events(client, tenant.admin_headers)
    theirs = await events(client, other.admin_headers)
    assert [e["project"]["name"] for e in mine] == ["a"]
    assert [e["project"]["name"] for e in theirs] == ["b"]
    # Another organization's event is not a cursor here.
    r = await client.get(URL, params={"after": theirs[0]["id"]}, headers=tenant.admin_headers)
    assert r.status_code == 400


async def test_the_openai_sdk_admin_client_lists_and_filters(runtime: Runtime) -> None:
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with httpx.AsyncClient(base_url=base) as http:
            for name in ("one", "two", "three"):
                await http.post(
                    "/v1/organization/projects", json={"name": name}, headers=tenant.admin_headers
                )
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key="unused", admin_api_key=tenant.admin_key, max_retries=0
        ) as sdk:
            logs = sdk.admin.organization.audit_logs
            found = [e async for e in logs.list(limit=2, event_types=["project.created"])]
            assert [e.type for e in found] == ["project.created"] * 3  # two pages, followed
            assert found[0].project_created is not None
            assert found[0].project_created.data is not None
            assert found[0].project_created.data.name == "three"
            actor = found[0].actor
            assert actor is not None and actor.type == "api_key" and actor.api_key is not None
            assert actor.api_key.user is not None
            assert actor.api_key.user.email == tenant.owner_email
            assert found[1].project is not None and found[1].project.id is not None
            since: EffectiveAt = {"gte": int(time.time()) - 60}
            recent = await logs.list(effective_at=since, project_ids=[found[1].project.id])
            assert [e.id for e in recent.data] == [found[1].id]


async def test_an_event_commits_with_its_change_or_neither_does(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    async with runtime.db.writer.acquire() as conn:
        await conn.execute(
            """
            CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'the log is down'; END $$;
            CREATE TRIGGER refuse_events BEFORE INSERT ON audit_logs
                FOR EACH ROW EXECUTE FUNCTION refuse_events();
            """
        )
    r = await client.post(
        "/v1/organization/projects", json={"name": "unrecorded"}, headers=tenant.admin_headers
    )
    assert r.status_code == 500
    assert (
        await runtime.db.writer.fetchval("SELECT count(*) FROM projects WHERE name = 'unrecorded'")
        == 0
    )


async def test_the_table_refuses_updates_and_deletes_but_the_expiry_function(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    for name in ("old", "new"):
        await client.post(
            "/v1/organization/projects", json={"name": name}, headers=tenant.admin_headers
        )
    db = runtime.db.writer
    for statement in (
        "UPDATE audit_logs SET type = 'nothing.happened'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)
    async with db.acquire() as conn:
        await conn.execute("SET jan.audit_expiry = 'off'")  # not that it would help to lie
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit_logs")
    assert len(await rows(runtime)) == 2
    first, second = await rows(runtime)
    # Retention deletes through the one function: only what is older than the cut-off.
    deleted = await db.fetchval(
        "SELECT audit_logs_expire($1, $2, 10)", tenant.organization_id, second["effective_at"]
    )
    assert deleted == (1 if first["effective_at"] < second["effective_at"] else 0)
    flag = await db.fetchval("SELECT current_setting('jan.audit_expiry', true)")
    assert flag in (None, "", "off")  # lowered again: the next DELETE is refused
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("DELETE FROM audit_logs")


async def test_sign_ins_and_sign_outs(client: httpx.AsyncClient, runtime: Runtime) -> None:
    client.base_url = httpx.URL("https://testserver")  # the refresh cookie is Secure
    guest = (await client.post("/v1/auth/guest-login", headers=WHERE)).json()
    user_id = guest["user"]["id"]
    rotated = await client.post(
        "/v1/auth/refresh-token", json={"refresh_token": guest["refresh_token"]}
    )
    replayed = await client.post(
        "/v1/auth/refresh-token", json={"refresh_token": guest["refresh_token"]}, headers=WHERE
    )
    assert rotated.status_code == 200 and replayed.status_code == 401
    out = await client.post(
        "/v1/auth/logout", json={"refresh_token": rotated.json()["refresh_token"]}
    )
    assert out.json()["revoked"] is True
    org = await tenancy.default_organization_id(runtime.db.writer)
    assert org is not None
    found = await events(client, await operator_headers(runtime, org))
    assert [e["type"] for e in found] == ["logout.succeeded", "login.failed", "login.succeeded"]
    session = found[-1]["actor"]["session"]
    assert session["user"]["id"] == user_id and session["ip_address"] == "198.51.100.7"
    assert found[-1]["login.succeeded"] == {"method": "guest"}
    assert found[1]["login.failed"] == {
        "error_code": "refresh_token_reused",
        "error_message": replayed.json()["error"]["message"],
    }
    assert found[0]["actor"]["session"]["user"]["id"] == user_id
    assert "project" not in found[0]
