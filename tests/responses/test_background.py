"""Background responses: run detached, pollable, cancellable, and finished by another
instance when the one that took them goes away."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from functions.common.runtime import Runtime
from functions.responses.worker import BackgroundWorker
from tests.conftest import component
from tests.conversations.tenants import Tenant
from tests.responses.helpers import create
from tests.responses.upstream import Reply, ScriptedUpstream


async def _poll(
    client: httpx.AsyncClient, tenant: Tenant, response_id: str, until: set[str]
) -> Any:
    for _ in range(200):
        got = (await client.get(f"/v1/responses/{response_id}", headers=tenant.user)).json()
        if got["status"] in until:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"response stayed {got['status']}")


async def _abandon(runtime: Runtime, response_id: str, *, attempts: int) -> None:
    """As if another instance had claimed the response, then vanished without handing it
    back (its lease expired)."""
    await runtime.db.writer.execute(
        """
        UPDATE responses SET status = 'in_progress', lease_owner = 'dead-instance',
            lease_expires_at = now() - interval '1 second', attempts = $2
        WHERE id = $1
        """,
        response_id,
        attempts,
    )


async def _take_over(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, response_id: str, until: set[str]
) -> Any:
    """A fresh instance's worker claims what is claimable; the response once in `until`."""
    worker = component(runtime, BackgroundWorker)
    successor = BackgroundWorker(runtime, worker.model, worker.tools, poll_seconds=0.05)
    await successor.start()
    try:
        return await _poll(client, tenant, response_id, until)
    finally:
        await successor.stop()


async def test_background_response_is_polled_to_completion(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.script.append(Reply(text="done in the background", delay=0.02))
    queued = await create(client, tenant.user, input="work", background=True)
    assert queued["status"] == "queued" and queued["background"] is True
    assert "usage" not in queued and queued["output"] == []
    done = await _poll(client, tenant, queued["id"], {"completed"})
    assert done["output"][0]["content"][0]["text"] == "done in the background"
    assert done["usage"]["output_tokens"] == 4 and done["completed_at"] is not None
    cancel = await client.post(f"/v1/responses/{queued['id']}/cancel", headers=tenant.user)
    assert cancel.status_code == 400 and "completed" in cancel.json()["error"]["message"]


async def test_background_response_is_cancelled(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, runtime: Runtime
) -> None:
    worker = component(runtime, BackgroundWorker)
    assert worker is not None
    worker.lease_seconds = 0.3  # renewals (which notice the cancel) every 0.1 s
    upstream.script.append(Reply(text="never " * 100, delay=0.05))
    queued = await create(client, tenant.user, input="long work", background=True)
    await _poll(client, tenant, queued["id"], {"in_progress"})
    cancelled = await client.post(f"/v1/responses/{queued['id']}/cancel", headers=tenant.user)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for _ in range(100):  # the runner stops and lets go of the upstream stream
        if not worker.running and upstream.streams_closed:
            break
        await asyncio.sleep(0.02)
    assert not worker.running and upstream.streams_closed == 1
    again = (await client.get(f"/v1/responses/{queued['id']}", headers=tenant.user)).json()
    assert again["status"] == "cancelled" and again["output"] == []
    # Idempotent.
    twice = await client.post(f"/v1/responses/{queued['id']}/cancel", headers=tenant.user)
    assert twice.status_code == 200


async def test_work_abandoned_by_a_dead_instance_is_finished_by_another(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    this = component(runtime, BackgroundWorker)
    assert this is not None
    await this.stop()  # this instance claims nothing from here on
    queued = await create(client, tenant.user, input="survive", background=True)
    await _abandon(runtime, queued["id"], attempts=1)
    done = await _take_over(client, tenant, runtime, queued["id"], {"completed"})
    assert done["output"][0]["content"][0]["text"] == "echo: survive"
    attempts = await runtime.db.writer.fetchval(
        "SELECT attempts FROM responses WHERE id = $1", queued["id"]
    )
    assert attempts == 2


async def test_draining_hands_work_back_and_exhausted_work_fails(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, runtime: Runtime
) -> None:
    first = component(runtime, BackgroundWorker)
    assert first is not None
    upstream.script.append(Reply(text="slow " * 50, delay=0.05))
    queued = await create(client, tenant.user, input="handover", background=True)
    await _poll(client, tenant, queued["id"], {"in_progress"})
    # Scale-down: drain hands the lease back, stop ends the local run.
    async with runtime.db.writer.acquire() as conn:
        await first.drain(conn)
    await first.stop()
    row = await runtime.db.writer.fetchrow(
        "SELECT status, lease_owner, attempts FROM responses WHERE id = $1", queued["id"]
    )
    assert row is not None
    assert row["status"] == "in_progress" and row["lease_owner"] is None
    assert row["attempts"] == 0
    done = await _take_over(client, tenant, runtime, queued["id"], {"completed"})
    assert done["output"][0]["content"][0]["text"] == "echo: handover"

    # One abandoned too often is failed, not retried forever (no worker runs meanwhile).
    stuck = await create(client, tenant.user, input="cursed", background=True)
    await _abandon(runtime, stuck["id"], attempts=3)
    failed = await _take_over(client, tenant, runtime, stuck["id"], {"failed", "completed"})
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
