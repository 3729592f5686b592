"""Background work is shared fairly: one tenant's backlog does not hold up another's, and
how much a project, a user and a guest may have queued or running is limited (429).

The server here allows 5 per project, 3 per user and 2 per guest."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.responses import store
from functions.responses.worker import BackgroundWorker
from tests.conftest import component, make_settings
from tests.conversations.tenants import Tenant, make_tenant
from tests.factories import bearer
from tests.responses.helpers import create
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream

PER_PROJECT, PER_USER, PER_GUEST = 5, 3, 2


@pytest.fixture
def settings(database_dsn: str, upstream: ScriptedUpstream) -> Settings:
    upstream.reset()
    return make_settings(
        database_dsn,
        jan_inference_model_url=upstream.url,
        jan_background_max_queued_per_project=PER_PROJECT,
        jan_background_max_queued_per_user=PER_USER,
        jan_background_max_queued_per_guest=PER_GUEST,
    )


async def _no_worker(runtime: Runtime) -> BackgroundWorker:
    """Stop this instance's worker: what is queued stays queued."""
    worker = component(runtime, BackgroundWorker)
    await worker.stop()
    return worker


async def _queue(client: httpx.AsyncClient, headers: dict[str, str], text: str) -> str:
    queued = await create(client, headers, input=text, background=True)
    assert queued["status"] == "queued"
    response_id: str = queued["id"]
    return response_id


async def _refused(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "one more", "background": True},
        headers=headers,
    )
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) > 0
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    return error


async def _statuses(runtime: Runtime, project_id: str) -> list[str]:
    rows = await runtime.db.writer.fetch(
        "SELECT status FROM responses WHERE project_id = $1 ORDER BY created_at", project_id
    )
    return [r["status"] for r in rows]


async def test_one_tenants_backlog_does_not_hold_up_another(
    client: httpx.AsyncClient,
    tenant: Tenant,
    stranger: Tenant,
    runtime: Runtime,
    upstream: ScriptedUpstream,
) -> None:
    worker = await _no_worker(runtime)
    # Tenant A's user and project key queue a backlog of slow jobs; B queues one after.
    upstream.script.extend(Reply(text="slow " * 200, delay=0.05) for _ in range(6))
    backlog = [await _queue(client, tenant.user, f"a{i}") for i in range(3)]
    backlog += [await _queue(client, tenant.other_user, f"a{i}") for i in range(3, 5)]
    theirs = await _queue(client, stranger.user, "b")

    successor = BackgroundWorker(
        runtime, worker.model, worker.tools, concurrency=2, lease_seconds=0.3, poll_seconds=0.05
    )
    await successor.start()
    try:
        for _ in range(200):
            if (await _statuses(runtime, stranger.project_id)) != ["queued"]:
                break
            await asyncio.sleep(0.02)
        # B started while most of A's backlog was still waiting (FIFO: after all of it).
        assert (await _statuses(runtime, stranger.project_id))[0] != "queued"
        a = await _statuses(runtime, tenant.project_id)
        assert a.count("queued") >= 3, a
    finally:
        for response_id in backlog:
            await client.post(f"/v1/responses/{response_id}/cancel", headers=tenant.user)
        await client.post(f"/v1/responses/{theirs}/cancel", headers=stranger.user)
        await successor.stop()


async def test_claims_take_turns_across_projects(
    client: httpx.AsyncClient, tenant: Tenant, stranger: Tenant, runtime: Runtime
) -> None:
    """Each claim takes the project running least, oldest first among equals."""
    await _no_worker(runtime)
    third = await make_tenant(runtime)
    a = [await _queue(client, tenant.user, f"a{i}") for i in range(3)]
    b = [await _queue(client, stranger.user, "b0")]
    c = [await _queue(client, third.user, f"c{i}") for i in range(2)]
    order = []
    for _ in range(7):
        claimed = await store.claim_fairly(
            runtime.db.writer, worker_id="test", lease_seconds=60, limit=1
        )
        order += [row["id"] for row in claimed]
    assert order == [a[0], b[0], c[0], a[1], c[1], a[2]]
    # One round of several slots: every waiting project's oldest first.
    await runtime.db.writer.execute("UPDATE responses SET status = 'completed'")
    a = [await _queue(client, tenant.user, f"a{i}") for i in range(3)]
    b = [await _queue(client, stranger.user, "b0")]
    claimed = await store.claim_fairly(
        runtime.db.writer, worker_id="test", lease_seconds=60, limit=2
    )
    assert {row["id"] for row in claimed} == {a[0], b[0]}


async def test_queued_and_running_are_limited_per_user_and_project(
    client: httpx.AsyncClient, tenant: Tenant, stranger: Tenant, runtime: Runtime
) -> None:
    await _no_worker(runtime)
    mine = [await _queue(client, tenant.user, f"u{i}") for i in range(PER_USER)]
    error = await _refused(client, tenant.user)
    assert f"{PER_USER} background responses" in error["message"]
    # Running counts like queued.
    await runtime.db.writer.execute(
        "UPDATE responses SET status = 'in_progress', lease_owner = 'w',"
        " lease_expires_at = now() + interval '1 minute' WHERE id = $1",
        mine[0],
    )
    await _refused(client, tenant.user)
    # Another user of the project fills it up to the project's limit.
    for i in range(PER_PROJECT - PER_USER):
        await _queue(client, tenant.other_user, f"o{i}")
    error = await _refused(client, tenant.other_user)
    assert "project" in error["message"]
    await _refused(client, tenant.key)
    # Other tenants are not affected, and foreground responses are not limited.
    await _queue(client, stranger.user, "elsewhere")
    assert (await create(client, tenant.user, input="now"))["status"] == "completed"
    # A cancelled (or finished) one frees its place.
    r = await client.post(f"/v1/responses/{mine[1]}/cancel", headers=tenant.user)
    assert r.status_code == 200
    await _queue(client, tenant.user, "again")


async def test_guests_get_few_even_when_racing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await _no_worker(runtime)
    session = (await client.post("/v1/auth/guest-login")).json()
    guest = bearer(session["access_token"])
    body = {"model": MODEL, "input": "x", "background": True}
    answers = await asyncio.gather(
        *(client.post("/v1/responses", json=body, headers=guest) for _ in range(8))
    )
    assert sorted(r.status_code for r in answers) == [200] * PER_GUEST + [429] * (8 - PER_GUEST)
    error = await _refused(client, guest)
    assert f"{PER_GUEST} background responses" in error["message"] and "guest" in error["message"]
