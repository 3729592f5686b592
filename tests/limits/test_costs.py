"""Prices and costs: the model prices API (a Jan extension), each call's cost recorded in the
usage ledger at the price of its time, the hourly rollup written with the ledger, and
OpenAI's costs API answered from it; completions usage shows reserved tokens."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from functions.common.runtime import Runtime
from functions.services.inference.service import Inference
from functions.services.ledger import UsageRecord, UsageRecorder
from functions.services.limits.limiter import Limiter
from tests.chat.fakes import FakeUpstream
from tests.conftest import component
from tests.factories import (
    Tenant,
    bearer,
    create_member,
    create_project,
    create_project_key,
    create_tenant,
)

DAY = 86400
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
ORG_PRICES = "/v1/organization/model_prices"


def project_prices(project_id: str) -> str:
    return f"/v1/organization/projects/{project_id}/model_prices"


async def flush(runtime: Runtime) -> None:
    async with runtime.db.writer.acquire() as conn:
        await component(runtime, Inference).usage.flush(conn)


def today() -> int:
    now = int(time.time())
    return now - now % DAY


async def costs(client: httpx.AsyncClient, tenant: Tenant, query: str) -> dict[str, Any]:
    answer = await client.get(
        f"/v1/organization/costs?start_time={today()}&{query}", headers=tenant.admin_headers
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_prices_api_sets_lists_overrides_and_deletes(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    h = tenant.admin_headers
    made = await client.post(
        ORG_PRICES, json={"model": "org/m-1", "input": 0.15, "output": 0.6}, headers=h
    )
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["object"] == "organization.model_price"
    assert (body["id"], body["input"], body["cached_input"], body["output"]) == (
        "org/m-1",
        0.15,
        None,
        0.6,
    )
    await client.post(
        ORG_PRICES,
        json={"model": "m1", "input": 2.5, "cached_input": 1.25, "output": 10},
        headers=h,
    )
    listed = (await client.get(ORG_PRICES, headers=h)).json()
    assert [p["id"] for p in listed["data"]] == ["m1", "org/m-1"]
    assert listed["first_id"] == "m1" and listed["has_more"] is False
    page = (await client.get(ORG_PRICES + "?limit=1&after=m1", headers=h)).json()
    assert [p["id"] for p in page["data"]] == ["org/m-1"]
    # Replace, then a project override.
    await client.post(ORG_PRICES, json={"model": "m1", "input": 3, "output": 12}, headers=h)
    over = await client.post(
        project_prices(tenant.project_id), json={"model": "m1", "input": 1, "output": 2}, headers=h
    )
    assert over.json()["object"] == "project.model_price"
    assert [p["input"] for p in (await client.get(ORG_PRICES, headers=h)).json()["data"]] == [
        3.0,
        0.15,
    ]
    # A model ID with a slash is deleted by its path.
    gone = await client.delete(ORG_PRICES + "/org/m-1", headers=h)
    assert gone.json() == {"object": "organization.model_price.deleted", "id": "org/m-1",
                           "deleted": True}  # fmt: skip
    assert (await client.delete(ORG_PRICES + "/org/m-1", headers=h)).status_code == 404
    gone = await client.delete(project_prices(tenant.project_id) + "/m1", headers=h)
    assert gone.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m1", "input": -1, "output": 1},
        {"model": "m1", "input": 1.0000001, "output": 1},
        {"model": "m1", "input": "1", "output": 1},
        {"model": "m1", "input": True, "output": 1},
        {"model": "m1", "input": 1e13, "output": 1},
        {"model": "m1", "input": 1},
        {"model": "", "input": 1, "output": 1},
        {"input": 1, "output": 1},
        {"model": "m1", "input": 1, "output": 1, "color": "red"},
    ],
)
async def test_bad_prices_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]
) -> None:
    answer = await client.post(ORG_PRICES, json=body, headers=tenant.admin_headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


async def test_prices_belong_to_owners_and_their_organization(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await client.post(
        ORG_PRICES, json={"model": "m1", "input": 1, "output": 1}, headers=tenant.admin_headers
    )
    _, reader = await create_member(runtime, tenant, org_role="reader")
    assert (await client.get(ORG_PRICES, headers=bearer(reader))).status_code == 200
    refused = await client.post(
        ORG_PRICES, json={"model": "m1", "input": 0, "output": 0}, headers=bearer(reader)
    )
    assert refused.status_code == 403
    other = await create_tenant(runtime)
    assert (await client.get(ORG_PRICES, headers=other.admin_headers)).json()["data"] == []
    assert (
        await client.get(project_prices(tenant.project_id), headers=other.admin_headers)
    ).status_code == 404
    assert (await client.delete(ORG_PRICES + "/m1", headers=other.admin_headers)).status_code == 404


async def test_calls_cost_the_price_of_their_time_and_costs_group_them(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, fake: FakeUpstream
) -> None:
    """Organization price $2 in / $1 cached / $8 out per 1M tokens; the second project
    overrides it with $4 / $16. The fake upstream reports 7 input tokens (3 cached) and 5
    output tokens per call."""
    fake.usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 3}}  # fmt: skip
    h = tenant.admin_headers
    second = await create_project(runtime, tenant)
    second_key = await create_project_key(runtime, tenant, project_id=second)
    await client.post(
        ORG_PRICES, json={"model": "m1", "input": 2, "cached_input": 1, "output": 8}, headers=h
    )
    await client.post(
        project_prices(second), json={"model": "m1", "input": 4, "output": 16}, headers=h
    )
    for key, n in ((tenant.project_key, 2), (second_key, 1)):
        for _ in range(n):
            done = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
            assert done.status_code == 200
    await flush(runtime)
    # In picodollars: 4 uncached x 2e6 + 3 cached x 1e6 + 5 x 8e6 = 51e6 in the first
    # project; 7 x 4e6 + 5 x 16e6 = 108e6 in the second (its override has no cached price).
    recorded = await runtime.db.writer.fetch(
        "SELECT project_id, cost_picodollars, reserved_tokens FROM usage_completions"
        " WHERE organization_id = $1 ORDER BY project_id = $2",
        tenant.organization_id,
        second,
    )
    assert [r["cost_picodollars"] for r in recorded] == [51_000_000, 51_000_000, 108_000_000]
    assert all(r["reserved_tokens"] > 5 for r in recorded)  # input estimate + max_tokens

    total = await costs(client, tenant, "")
    [bucket] = total["data"]
    assert bucket["object"] == "bucket" and bucket["start_time"] == today()
    assert bucket["results"] == [
        {"object": "organization.costs.result", "amount": {"value": 210e-6, "currency": "usd"},
         "line_item": None, "project_id": None, "api_key_id": None, "quantity": None,
         "quantity_unit": None},
    ]  # fmt: skip
    by_project = await costs(client, tenant, "group_by=project_id")
    amounts = {r["project_id"]: r["amount"]["value"] for r in by_project["data"][0]["results"]}
    assert amounts == {tenant.project_id: 102e-6, second: 108e-6}
    lines = await costs(client, tenant, f"group_by=line_item&project_ids={tenant.project_id}")
    items = {
        r["line_item"]: (r["quantity"], r["quantity_unit"], r["amount"]["value"])
        for r in lines["data"][0]["results"]
    }
    assert items == {
        "m1, input": (8, "tokens", 16e-6),
        "m1, cached input": (6, "tokens", 6e-6),
        "m1, output": (10, "tokens", 80e-6),
    }
    by_key = await costs(client, tenant, "group_by=api_key_id&group_by=project_id")
    assert len(by_key["data"][0]["results"]) == 2
    assert all(r["api_key_id"] for r in by_key["data"][0]["results"])

    # A new price applies to new calls only.
    await client.post(ORG_PRICES, json={"model": "m1", "input": 0, "output": 0}, headers=h)
    await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tenant.project_key))
    await flush(runtime)
    again = await costs(client, tenant, "")
    assert again["data"][0]["results"][0]["amount"]["value"] == 210e-6
    # Another organization sees none of it.
    other = await create_tenant(runtime)
    assert (await costs(client, other, ""))["data"][0]["results"] == []


@pytest.mark.parametrize(
    "query",
    ["bucket_width=1h", "group_by=model", "limit=181", "limit=0", "page=abc", "end_time=1"],
)
async def test_bad_cost_queries_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, query: str
) -> None:
    answer = await client.get(
        f"/v1/organization/costs?start_time={today()}&{query}", headers=tenant.admin_headers
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] in {"bucket_width", "group_by", "limit", "page",
                                               "end_time"}  # fmt: skip


async def test_costs_page_over_days(client: httpx.AsyncClient, tenant: Tenant) -> None:
    start = today() - 9 * DAY
    first = (
        await client.get(
            f"/v1/organization/costs?start_time={start}&limit=7", headers=tenant.admin_headers
        )
    ).json()
    assert len(first["data"]) == 7 and first["has_more"] is True
    rest = (
        await client.get(
            f"/v1/organization/costs?start_time={start}&limit=7&page={first['next_page']}",
            headers=tenant.admin_headers,
        )
    ).json()
    assert len(rest["data"]) == 3 and rest["has_more"] is False


def _rec(org: str, at: float, project: str | None, key: str | None, n: int) -> UsageRecord:
    return UsageRecord(
        created_at=datetime.fromtimestamp(at, UTC), organization_id=org, project_id=project,
        api_key_id=key, user_id=None, model="m1", provider_id="builtin", endpoint="http://x",
        operation="chat.completions", streamed=False, input_tokens=n, output_tokens=2 * n,
        input_cached_tokens=n // 2, latency_ms=5, ttft_ms=None, status=200,
        cost_picodollars=3 * n, reserved_tokens=4 * n, cached_input_cost=n // 2,
        output_cost=2 * n,
    )  # fmt: skip


async def test_the_rollup_answers_what_the_ledger_rows_say(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    """Records over three days, in several batches (some refused for their data): the
    hourly rollup's sums equal the rows', and usage read from either is the same."""
    org = tenant.organization_id
    recorder = UsageRecorder(runtime, batch_size=7)
    base = today() - 2 * DAY
    for i in range(60):
        recorder.record(
            _rec(org, base + i * 3000 + 17, ("proj_a", "proj_b", None)[i % 3],
                 ("key_a", None)[i % 2], i + 1)
        )  # fmt: skip
    bad = _rec(org, base + 5, "proj_a", "key_a", 1)
    bad.model = "bad\x00model"  # PostgreSQL's text cannot hold it: the record is set aside
    recorder.record(bad)
    async with runtime.db.writer.acquire() as conn:
        assert await recorder.flush(conn) == 60
    assert len(recorder.rejected) == 1
    raw = await runtime.db.writer.fetchrow(
        "SELECT count(*) AS requests, sum(input_tokens) AS i, sum(output_tokens) AS o,"
        " sum(input_cached_tokens) AS c, sum(reserved_tokens) AS r, sum(cost_picodollars) AS p"
        " FROM usage_completions WHERE organization_id = $1",
        org,
    )
    rolled = await runtime.db.writer.fetchrow(
        "SELECT sum(requests) AS requests, sum(input_tokens) AS i, sum(output_tokens) AS o,"
        " sum(input_cached_tokens) AS c, sum(reserved_tokens) AS r, sum(cost_picodollars) AS p,"
        " sum(input_cost_picodollars + cached_input_cost_picodollars + output_cost_picodollars)"
        " AS parts FROM usage_hourly WHERE organization_id = $1",
        org,
    )
    assert raw is not None and rolled is not None
    assert dict(raw) == {k: v for k, v in dict(rolled).items() if k != "parts"}
    assert rolled["parts"] == rolled["p"]

    async def usage(query: str) -> list[Any]:
        answer = await client.get(
            f"/v1/organization/usage/completions?{query}", headers=tenant.admin_headers
        )
        assert answer.status_code == 200
        return [
            sorted(b["results"], key=lambda r: (r["project_id"] or "", r["api_key_id"] or ""))
            for b in answer.json()["data"]
        ]

    end = today() + DAY
    for width, groups in (("1d", "group_by=project_id&group_by=api_key_id&limit=31"),
                          ("1h", "limit=168")):  # fmt: skip
        hourly = await usage(f"start_time={base}&end_time={end}&bucket_width={width}&{groups}")
        # Starting a second after the hour reads the ledger's rows instead.
        rows = await usage(f"start_time={base + 1}&end_time={end}&bucket_width={width}&{groups}")
        assert hourly == rows
        assert sum(r["reserved_tokens"] for b in hourly for r in b) == 4 * sum(range(1, 61))


async def test_a_spend_limit_is_reached_by_real_priced_calls_and_holds_after_a_restart(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, fake: FakeUpstream
) -> None:
    """$1 a token (in and out): a call costs $12 (7 + 5 tokens). With a $50 project spend
    limit, calls are admitted while their reservation fits, then refused with
    ``insufficient_quota``; a limiter that lost its counters (a restart) starts from the
    ledger's rollup, which the calls wrote, and refuses too."""
    h = tenant.admin_headers
    await client.post(ORG_PRICES, json={"model": "m1", "input": 1e6, "output": 1e6}, headers=h)
    limit = await client.post(
        f"/v1/organization/projects/{tenant.project_id}/spend_limit",
        json={"threshold_amount": 5000, "currency": "USD", "interval": "month"},
        headers=h,
    )
    assert limit.status_code == 200
    answers = [
        await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tenant.project_key))
        for _ in range(6)
    ]
    statuses = [a.status_code for a in answers]
    accepted = statuses.count(200)
    assert 1 <= accepted < 6 and statuses[accepted:] == [429] * (6 - accepted)
    assert answers[-1].json()["error"]["code"] == "insufficient_quota"
    await flush(runtime)
    spent = (await costs(client, tenant, ""))["data"][0]["results"][0]["amount"]["value"]
    assert spent == 12.0 * accepted <= 50
    component(runtime, Limiter).counters.clear()  # as after a restart
    again = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tenant.project_key))
    assert again.status_code == 429


async def test_the_rollup_is_in_utc_hours_and_holds_any_cost(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    """A record stamped in another time zone lands in its UTC hour; a cost beyond bigint
    (an absurd price times a clamped count) is kept, not refused; a query ending in the
    past within an hour is answered from the rows, without what follows its end."""
    from datetime import timedelta, timezone

    org = tenant.organization_id
    base = today() - DAY
    india = timezone(timedelta(hours=5, minutes=30))
    late = _rec(org, base + 3 * 3600 + 50 * 60, "proj_a", None, 1)
    late.created_at = late.created_at.astimezone(india)  # 10:50+05:30 on the clock
    late.cost_picodollars = 10**20
    recorder = UsageRecorder(runtime)
    recorder.record(late)
    async with runtime.db.writer.acquire() as conn:
        assert await recorder.flush(conn) == 1
    row = await runtime.db.writer.fetchrow(
        "SELECT hour, cost_picodollars FROM usage_hourly WHERE organization_id = $1", org
    )
    assert row is not None
    assert row["hour"] == datetime.fromtimestamp(base + 3 * 3600, UTC)
    assert row["cost_picodollars"] == 10**20
    ended = await client.get(
        f"/v1/organization/usage/completions?start_time={base + 3 * 3600}"
        f"&end_time={base + 3 * 3600 + 600}&bucket_width=1h",
        headers=tenant.admin_headers,
    )
    assert ended.json()["data"][0]["results"] == []


async def test_cached_tokens_never_exceed_the_input(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, fake: FakeUpstream
) -> None:
    fake.usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 99}}  # fmt: skip
    done = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tenant.project_key))
    assert done.status_code == 200
    await flush(runtime)
    cached = await runtime.db.writer.fetchval(
        "SELECT input_cached_tokens FROM usage_completions WHERE organization_id = $1",
        tenant.organization_id,
    )
    assert cached == 7
