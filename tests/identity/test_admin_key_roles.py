"""Admin keys follow their owner: a demoted owner's key only reads, a removed owner's key
stops working, operator keys (made by the CLI, owned by no user) stay owners; and the last
owner of an organization cannot be demoted away by two requests at once."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from functions.app import create_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services import identity as identity_module
from functions.services.identity import Identity
from tests.conftest import component
from tests.factories import Tenant, bearer, create_member, create_tenant
from tests.identity.test_operators import _cli

REDIS = "redis://127.0.0.1:6379/0"
PROJECTS = "/v1/organization/projects"
USERS = "/v1/organization/users"
ADMIN_KEYS = "/v1/organization/admin_api_keys"


@pytest.fixture
async def opened(runtime: Runtime) -> Runtime:
    create_app(runtime)
    await runtime.open()
    return runtime


async def _admin_key_of(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    """A new admin key made through the API by whoever ``headers`` authenticate."""
    r = await client.post(ADMIN_KEYS, json={"name": "mine"}, headers=headers)
    assert r.status_code == 200, r.text
    created: dict[str, str] = r.json()
    return created


async def _second_owner(runtime: Runtime, t: Tenant) -> dict[str, str]:
    """Another owner of the tenant's organization: their JWT headers."""
    _, token = await create_member(runtime, t, org_role="owner", project_role=None)
    return bearer(token)


async def _owners(runtime: Runtime, organization_id: str) -> int:
    count: int = await runtime.db.writer.fetchval(
        "SELECT count(*) FROM organization_members WHERE organization_id = $1 AND role = 'owner'",
        organization_id,
    )
    return count


async def test_a_demoted_owners_admin_key_only_reads(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    created = await _admin_key_of(client, t.user_headers)
    key = bearer(created["value"])
    other_owner = await _second_owner(runtime, t)
    # Used as an owner first, so the instance has the key cached with owner power.
    r = await client.post(PROJECTS, json={"name": "before"}, headers=key)
    assert r.status_code == 200, r.text

    r = await client.post(
        f"{USERS}/{t.owner_user_id}", json={"role": "reader"}, headers=other_owner
    )
    assert r.status_code == 200 and r.json()["role"] == "reader"

    # At once, on the instance that processed the demotion: a reader's key.
    assert (await client.get(PROJECTS, headers=key)).status_code == 200
    r = await client.post(PROJECTS, json={"name": "after"}, headers=key)
    assert r.status_code == 403 and r.json()["error"]["type"] == "invalid_request_error"
    r = await client.post(f"{USERS}/{t.owner_user_id}", json={"role": "owner"}, headers=key)
    assert r.status_code == 403
    r = await client.post(ADMIN_KEYS, json={"name": "fresh"}, headers=key)
    assert r.status_code == 403
    r = await client.delete(f"{USERS}/{t.owner_user_id}", headers=key)
    assert r.status_code == 403
    r = await client.post(f"{PROJECTS}/{t.project_id}", json={"name": "renamed"}, headers=key)
    assert r.status_code == 403
    # The tenant's other admin key (owned by the same user) is demoted with it.
    r = await client.post(PROJECTS, json={"name": "after"}, headers=t.admin_headers)
    assert r.status_code == 403

    # The key list shows why: each key's owner with their current role.
    listed = (await client.get(ADMIN_KEYS, headers=other_owner)).json()["data"]
    mine = next(k for k in listed if k["id"] == created["id"])
    assert mine["owner"]["id"] == t.owner_user_id and mine["owner"]["role"] == "reader"
    one = (await client.get(f"{ADMIN_KEYS}/{created['id']}", headers=key)).json()
    assert one["owner"]["role"] == "reader"

    # Promoted again, the same key writes again: it follows its owner's current role.
    r = await client.post(f"{USERS}/{t.owner_user_id}", json={"role": "owner"}, headers=other_owner)
    assert r.status_code == 200
    r = await client.post(PROJECTS, json={"name": "again"}, headers=key)
    assert r.status_code == 200


async def test_a_removed_owners_admin_keys_stop_working(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    created = await _admin_key_of(client, t.user_headers)
    key = bearer(created["value"])
    other_owner = await _second_owner(runtime, t)
    assert (await client.get(PROJECTS, headers=key)).status_code == 200  # cached

    r = await client.delete(f"{USERS}/{t.owner_user_id}", headers=other_owner)
    assert r.status_code == 200
    for credential in (key, t.admin_headers):
        r = await client.get(PROJECTS, headers=credential)
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    listed = (await client.get(ADMIN_KEYS, headers=other_owner)).json()["data"]
    assert created["id"] not in [k["id"] for k in listed]


async def test_a_key_whose_owner_left_the_organization_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Defence in depth: a user key left behind by a membership that ended some other way
    than through the API's removal (which deletes the keys) grants nothing."""
    t = await create_tenant(runtime)
    await _second_owner(runtime, t)
    assert (await client.get(PROJECTS, headers=t.admin_headers)).status_code == 200
    await runtime.db.writer.execute(
        "DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2",
        t.organization_id,
        t.owner_user_id,
    )
    await component(runtime, Identity).revoke_all()
    assert (await client.get(PROJECTS, headers=t.admin_headers)).status_code == 401


async def test_operator_keys_stay_organization_owners(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    t = await create_tenant(runtime)
    made = _cli(settings, "create-admin-key", "--org", t.organization_id)
    assert made.returncode == 0, made.stderr
    operator = bearer(made.stdout.strip())
    reader_id, _ = await create_member(runtime, t, org_role="reader", project_role=None)

    r = await client.post(PROJECTS, json={"name": "by the operator"}, headers=operator)
    assert r.status_code == 200, r.text
    r = await client.post(f"{USERS}/{reader_id}", json={"role": "owner"}, headers=operator)
    assert r.status_code == 200 and r.json()["role"] == "owner"
    r = await client.post(f"{USERS}/{t.owner_user_id}", json={"role": "reader"}, headers=operator)
    assert r.status_code == 200
    r = await client.post(PROJECTS, json={"name": "still"}, headers=operator)
    assert r.status_code == 200
    listed = (await client.get(ADMIN_KEYS, headers=operator)).json()["data"]
    assert [k["owner"] for k in listed if k["name"] == "operator key"] == [{"role": "owner"}]


async def test_a_demotion_racing_a_cache_fill_leaves_no_owner_entry(
    opened: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key looked up before a demotion committed, but cached after the demotion cleared
    the cache, must not keep owner power for the cache's lifetime."""
    t = await create_tenant(opened)
    identity = component(opened, Identity)
    real_load = identity_module.load_key
    loaded, release = asyncio.Event(), asyncio.Event()

    async def slow_load(ex: object, *, secret_hash: bytes) -> object:
        row = await real_load(ex, secret_hash=secret_hash)  # type: ignore[arg-type]
        loaded.set()
        await release.wait()
        return row

    monkeypatch.setattr(identity_module, "load_key", slow_load)
    in_flight = asyncio.create_task(identity.verify_key(t.admin_key))
    await loaded.wait()  # read as an owner; not cached yet
    await opened.db.writer.execute(
        "UPDATE organization_members SET role = 'reader' WHERE user_id = $1", t.owner_user_id
    )
    await identity.revoke_all()  # what the demotion's handler does after committing
    release.set()
    assert (await in_flight).org_role == "owner"  # the request already under way
    monkeypatch.undo()
    assert (await identity.verify_key(t.admin_key)).org_role == "reader"


async def test_a_demotion_reaches_other_instances_through_redis(settings: Settings) -> None:
    with_redis = settings.model_copy(update={"redis_url": SecretStr(REDIS)})
    a, b = Runtime(with_redis), Runtime(with_redis)
    app_a, app_b = create_app(a), create_app(b)
    await a.open()
    await b.open()
    try:
        t = await create_tenant(a)
        identity_b = component(b, Identity)
        assert identity_b.bus is not None
        await asyncio.wait_for(identity_b.bus.subscribed.wait(), 5)
        identity_b.keys.ttl = 3600  # only the broadcast can evict it in time
        second = await _second_owner(a, t)
        transport_a, transport_b = httpx.ASGITransport(app=app_a), httpx.ASGITransport(app=app_b)
        async with (
            httpx.AsyncClient(transport=transport_a, base_url="http://a") as on_a,
            httpx.AsyncClient(transport=transport_b, base_url="http://b") as on_b,
        ):
            r = await on_b.post(PROJECTS, json={"name": "on b"}, headers=t.admin_headers)
            assert r.status_code == 200  # cached on b with owner power
            r = await on_a.post(
                f"{USERS}/{t.owner_user_id}", json={"role": "reader"}, headers=second
            )
            assert r.status_code == 200
            for _ in range(200):
                if not identity_b.keys:
                    break
                await asyncio.sleep(0.01)
            r = await on_b.post(PROJECTS, json={"name": "refused"}, headers=t.admin_headers)
            assert r.status_code == 403
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_concurrent_demotions_leave_an_owner(
    client: httpx.AsyncClient, runtime: Runtime, method: str
) -> None:
    """The last two owners demote (or remove) each other at the same moment: one of them
    stays owner."""
    t = await create_tenant(runtime)
    other_id, other_token = await create_member(runtime, t, org_role="owner", project_role=None)
    first, second = t.user_headers, bearer(other_token)
    assert (await client.get(USERS, headers=first)).status_code == 200  # both authenticated
    assert (await client.get(USERS, headers=second)).status_code == 200
    assert runtime.settings.db_postgresql_write_dsn is not None
    dsn = runtime.settings.db_postgresql_write_dsn.get_secret_value()
    blocker = await asyncpg.connect(dsn)
    try:
        # Hold both members' rows so the two requests are in their transactions together
        # when they are let go.
        hold = blocker.transaction()
        await hold.start()
        await blocker.execute(
            "SELECT 1 FROM organization_members WHERE organization_id = $1 FOR UPDATE",
            t.organization_id,
        )
        body = {"role": "reader"} if method == "POST" else None
        demotions = [
            asyncio.create_task(
                client.request(method, f"{USERS}/{user}", json=body, headers=headers)
            )
            for user, headers in ((other_id, first), (t.owner_user_id, second))
        ]
        for _ in range(1000):
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            if waiting == 2 or any(d.done() for d in demotions):
                break
            await asyncio.sleep(0.01)
        assert waiting == 2, "both demotions should wait on the held rows"
        await hold.commit()
        answers = await asyncio.gather(*demotions)
    finally:
        await blocker.close()
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 400], [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 400)
    assert refused.json()["error"]["code"] == "last_owner"
    assert await _owners(runtime, t.organization_id) == 1
