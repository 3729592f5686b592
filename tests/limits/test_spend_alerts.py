"""Spend alerts: OpenAI's organization and project spend alerts through the official SDK's
admin client, validation, roles and tenants; crossings recorded once a month (also with
two instances checking at once) from the usage ledger's hourly rollup; Jan's webhooks
POSTed to a real local receiver that verifies the signature with the official SDK,
retried with backoff until delivered or failed; private URLs refused; and end to end,
real calls at a set price crossing an alert."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from functions.app import create_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.inference.service import Inference
from functions.services.spend_alerts import SpendAlerts
from tests.chat.fakes import FakeUpstream
from tests.conftest import component, make_settings
from tests.factories import Tenant, bearer, create_member, create_project, create_tenant
from tests.tools.http_server import serve, serve_app

ORG = "/v1/organization/spend_alerts"


def project_path(project_id: str) -> str:
    return f"/v1/organization/projects/{project_id}/spend_alerts"


@pytest.fixture
def allowed() -> tuple[str, ...]:
    return ("127.0.0.1",)  # the local receiver; a test that wants none says so


@pytest.fixture
def settings(database_dsn: str, fake: FakeUpstream, allowed: tuple[str, ...]) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=fake.base_url,
        jan_rate_limit_store="memory",
        jan_provider_allowed_hosts=allowed,
        jan_spend_alert_interval_seconds=0,  # the tests run the rounds themselves
    )


@dataclass
class Receiver:
    """A webhook endpoint: answers the next status of ``statuses`` (then 200), keeps what
    it got."""

    statuses: list[int] = field(default_factory=list)
    got: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: Request) -> Response:
        self.got.append((await request.body(), dict(request.headers)))
        return Response(status_code=self.statuses.pop(0) if self.statuses else 200)


@contextlib.asynccontextmanager
async def receiving(*statuses: int) -> AsyncIterator[Receiver]:
    receiver = Receiver(list(statuses))
    async with serve(Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])) as base:
        receiver.url = f"{base}/hook"
        yield receiver


async def spent(runtime: Runtime, tenant: Tenant, cents: int, project_id: str) -> None:
    """What the usage ledger's hourly rollup says the project spent this month."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await runtime.db.writer.execute(
        "INSERT INTO usage_hourly (organization_id, hour, project_id, model, operation,"
        " requests, cost_picodollars) VALUES ($1, $2, $3, 'm1', 'chat.completions', 1, $4)"
        " ON CONFLICT (organization_id, hour, project_id, api_key_id, user_id, model, operation)"
        " DO UPDATE SET cost_picodollars = usage_hourly.cost_picodollars"
        " + excluded.cost_picodollars",
        tenant.organization_id,
        hour,
        project_id,
        cents * 10**10,
    )


def webhook(url: str, cents: int = 100) -> dict[str, Any]:
    return {
        "threshold_amount": cents,
        "currency": "USD",
        "interval": "month",
        "notification_channel": {"type": "webhook", "url": url},
    }


def email(cents: int = 100) -> dict[str, Any]:
    return {
        "threshold_amount": cents,
        "currency": "USD",
        "interval": "month",
        "notification_channel": {"type": "email", "recipients": ["finance@example.com"]},
    }


async def events(client: httpx.AsyncClient, tenant: Tenant, path: str) -> list[dict[str, Any]]:
    answer = await client.get(f"{path}/events", headers=tenant.admin_headers)
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


# --- the API -------------------------------------------------------------------------------
async def test_spend_alerts_in_openais_shape_through_the_sdk(
    runtime: Runtime, fake: FakeUpstream
) -> None:
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key="unused", admin_api_key=tenant.admin_key, max_retries=0
        ) as sdk:
            org = sdk.admin.organization.spend_alerts
            channel: Any = {
                "type": "email",
                "recipients": ["finance@example.com"],
                "subject_prefix": "Jan spend",
            }
            made = [
                await org.create(
                    threshold_amount=cents,
                    currency="USD",
                    interval="month",
                    notification_channel=channel,
                )
                for cents in (1000, 2000, 3000)
            ]
            first = made[0]
            assert first.object == "organization.spend_alert" and first.id.startswith("alert_")
            assert (first.threshold_amount, first.currency, first.interval) == (
                1000,
                "USD",
                "month",
            )
            assert first.notification_channel.recipients == ["finance@example.com"]
            assert first.notification_channel.subject_prefix == "Jan spend"
            assert (await org.retrieve(first.id)).model_extra == {"last_triggered_at": None}

            listed = [a.id async for a in org.list(limit=2)]  # the SDK follows has_more
            assert listed == [a.id for a in made]
            page = await org.list(limit=1, after=made[0].id)
            assert [a.id for a in page.data] == [made[1].id] and page.has_more
            back = await org.list(limit=2, before=made[2].id)
            assert [a.id for a in back.data] == [made[0].id, made[1].id] and not back.has_more
            desc = await org.list(order="desc", limit=2)
            assert [a.id for a in desc.data] == [made[2].id, made[1].id] and desc.has_more
            none = await org.list(limit=0)
            assert none.data == [] and none.has_more

            updated = await org.update(
                first.id,
                threshold_amount=1500,
                currency="USD",
                interval="month",
                notification_channel={"type": "email", "recipients": ["ops@example.com"]},
            )
            assert updated.threshold_amount == 1500
            assert updated.notification_channel.recipients == ["ops@example.com"]
            gone = await org.delete(first.id)
            assert (gone.id, gone.object, gone.deleted) == (
                first.id,
                "organization.spend_alert.deleted",
                True,
            )
            with pytest.raises(openai.NotFoundError):
                await org.retrieve(first.id)

            project = sdk.admin.organization.projects.spend_alerts
            own = await project.create(
                tenant.project_id,
                threshold_amount=500,
                currency="USD",
                interval="month",
                notification_channel=channel,
            )
            assert own.object == "project.spend_alert"
            assert [a.id for a in (await project.list(tenant.project_id)).data] == [own.id]
            # Each scope lists and finds only its own alerts.
            assert own.id not in [a.id async for a in org.list()]
            with pytest.raises(openai.NotFoundError):
                await org.retrieve(own.id)
            other = await create_project(runtime, tenant)
            with pytest.raises(openai.NotFoundError):
                await project.retrieve(own.id, project_id=other)
            deleted = await project.delete(own.id, project_id=tenant.project_id)
            assert deleted.object == "project.spend_alert.deleted"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"threshold_amount": -1}, "threshold_amount"),
        ({"threshold_amount": "100"}, "threshold_amount"),
        ({"currency": "EUR"}, "currency"),
        ({"interval": "week"}, "interval"),
        ({"notification_channel": None}, "notification_channel"),
        ({"notification_channel": {"type": "sms"}}, "notification_channel"),
        ({"notification_channel": {"type": "email", "recipients": []}}, "notification_channel"),
        ({"notification_channel": {"type": "email", "recipients": ["nobody"]}}, None),
        ({"notification_channel": {"type": "webhook", "url": "ftp://example.com/"}}, None),
        ({"notification_channel": {"type": "webhook", "url": "https://u:p@example.com/"}}, None),
        ({"notification_channel": {"type": "webhook", "url": "https://example.com:x/"}}, None),
        (
            {"notification_channel": {"type": "webhook", "url": "https://e.com", "secret": "s"}},
            None,
        ),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_alerts_are_400(
    client: httpx.AsyncClient, tenant: Tenant, change: dict[str, Any], param: str | None
) -> None:
    answer = await client.post(ORG, json={**email(), **change}, headers=tenant.admin_headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == (param or "notification_channel")


async def test_missing_fields_bad_pages_and_unknown_alerts(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    h = tenant.admin_headers
    for name in ("threshold_amount", "currency", "interval", "notification_channel"):
        body = {k: v for k, v in email().items() if k != name}
        answer = await client.post(ORG, json=body, headers=h)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == name
    for query in ("limit=101", "limit=-1", "limit=x", "order=up"):
        assert (await client.get(f"{ORG}?{query}", headers=h)).status_code == 400
    for method, path in [
        ("GET", f"{ORG}/alert_nope"),
        ("POST", f"{ORG}/alert_nope"),
        ("DELETE", f"{ORG}/alert_nope"),
        ("GET", f"{ORG}/alert_nope/events"),
    ]:
        answer = await client.request(method, path, json=email(), headers=h)
        assert answer.status_code == 404, (method, path, answer.text)


async def test_owners_write_readers_read_and_tenants_see_only_their_own(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    made = await client.post(ORG, json=email(), headers=tenant.admin_headers)
    alert = made.json()["id"]
    made_p = await client.post(
        project_path(tenant.project_id), json=email(), headers=tenant.admin_headers
    )
    project_alert = made_p.json()["id"]

    _, reader = await create_member(runtime, tenant, org_role="reader", project_role=None)
    assert (await client.get(f"{ORG}/{alert}", headers=bearer(reader))).status_code == 200
    assert (await client.get(f"{ORG}/{alert}/events", headers=bearer(reader))).status_code == 200
    assert (await client.post(ORG, json=email(), headers=bearer(reader))).status_code == 403
    refused = await client.delete(f"{ORG}/{alert}", headers=bearer(reader))
    assert refused.status_code == 403

    _, member = await create_member(runtime, tenant, project_role="member")
    mine = project_path(tenant.project_id)
    assert (await client.get(f"{mine}/{project_alert}", headers=bearer(member))).status_code == 200
    assert (await client.post(mine, json=email(), headers=bearer(member))).status_code == 403
    assert (await client.get(ORG, headers=bearer(member))).status_code == 403
    _, project_owner = await create_member(runtime, tenant, project_role="owner")
    assert (await client.post(mine, json=email(), headers=bearer(project_owner))).status_code == 200
    assert (await client.get(mine, headers=bearer(tenant.project_key))).status_code in (401, 403)

    other = await create_tenant(runtime)
    oh = other.admin_headers
    for method, path in [
        ("GET", f"{ORG}/{alert}"),
        ("POST", f"{ORG}/{alert}"),
        ("DELETE", f"{ORG}/{alert}"),
        ("GET", f"{ORG}/{alert}/events"),
        ("GET", f"{mine}/{project_alert}"),
        ("GET", mine),
    ]:
        answer = await client.request(method, path, json=email(), headers=oh)
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await client.get(ORG, headers=oh)).json()["data"] == []
    assert (await client.get(f"{ORG}/{alert}", headers=tenant.admin_headers)).status_code == 200


@pytest.mark.parametrize("allowed", [()])
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
async def test_private_webhook_urls_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, url: str
) -> None:
    answer = await client.post(ORG, json=webhook(url), headers=tenant.admin_headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "url_not_allowed" and "JAN_PROVIDER_ALLOWED_HOSTS" in error["message"]
    made = await client.post(ORG, json=email(), headers=tenant.admin_headers)
    changed = await client.post(
        f"{ORG}/{made.json()['id']}", json=webhook(url), headers=tenant.admin_headers
    )
    assert changed.status_code == 400 and changed.json()["error"]["code"] == "url_not_allowed"


# --- crossings and webhooks ----------------------------------------------------------------
async def test_a_crossing_is_recorded_once_and_delivered_signed(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alerts = component(runtime, SpendAlerts)
    path = project_path(tenant.project_id)
    async with receiving() as receiver:
        made = await client.post(path, json=webhook(receiver.url), headers=tenant.admin_headers)
        assert made.status_code == 200, made.text
        alert = made.json()
        secret = alert["notification_channel"].pop("secret")
        assert secret.startswith("whsec_")
        assert alert["notification_channel"] == {"type": "webhook", "url": receiver.url}
        org_email = await client.post(ORG, json=email(1000), headers=tenant.admin_headers)

        await spent(runtime, tenant, 99, tenant.project_id)
        assert await alerts.run_once() == (0, 0)  # below the threshold
        await spent(runtime, tenant, 51, tenant.project_id)  # 150 cents: crossed
        assert await alerts.run_once() == (1, 1)
        assert await alerts.run_once() == (0, 0)  # once a month
        await spent(runtime, tenant, 1000, tenant.project_id)
        assert await alerts.run_once() == (1, 0)  # the organization's (email: recorded)

    [(body, headers)] = receiver.got
    sdk = openai.OpenAI(api_key="x", webhook_secret=secret)
    sdk.webhooks.verify_signature(body, headers)
    event = sdk.webhooks.unwrap(body, headers).to_dict()
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.verify_signature(body.replace(b"150", b"151"), headers)
    period = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert event["object"] == "event" and event["type"] == "spend_alert.triggered"
    assert event["data"] == {
        "alert_id": alert["id"],
        "project_id": tenant.project_id,
        "threshold_amount": 100,
        "spend_amount": 150,
        "currency": "USD",
        "period_start": int(period.timestamp()),
    }
    assert headers["webhook-id"] == event["id"] and event["id"].startswith("evt_")

    [recorded] = await events(client, tenant, f"{path}/{alert['id']}")
    assert recorded["id"] == event["id"] and recorded["spend_amount"] == 150
    assert recorded["delivery"]["status"] == "delivered"
    assert recorded["delivery"]["attempts"] == 1 and recorded["delivery"]["last_error"] is None
    shown = (await client.get(f"{path}/{alert['id']}", headers=tenant.admin_headers)).json()
    assert shown["last_triggered_at"] == recorded["created_at"] and "secret" not in str(shown)
    [by_mail] = await events(client, tenant, f"{ORG}/{org_email.json()['id']}")
    assert by_mail["delivery"] == {
        "status": "none",
        "attempts": 0,
        "next_attempt_at": None,
        "delivered_at": None,
        "last_error": None,
    }
    # An update keeps the webhook's secret (and does not show it).
    kept = await client.post(
        f"{path}/{alert['id']}", json=webhook(receiver.url, 200), headers=tenant.admin_headers
    )
    assert "secret" not in kept.json()["notification_channel"]
    stored = await runtime.db.writer.fetchval(
        "SELECT secret_ciphertext FROM spend_alerts WHERE id = $1", alert["id"]
    )
    assert secret.encode() not in stored
    assert secret not in caplog.text and secret.removeprefix("whsec_") not in caplog.text


async def test_a_failing_receiver_is_retried_with_backoff_until_delivered(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    alerts = component(runtime, SpendAlerts)
    alerts.retry_seconds = 0.2
    async with receiving(500, 503) as receiver:
        made = await client.post(ORG, json=webhook(receiver.url), headers=tenant.admin_headers)
        path = f"{ORG}/{made.json()['id']}"
        await spent(runtime, tenant, 100, tenant.project_id)
        waits = []
        for _ in range(50):
            await alerts.run_once()
            [event] = await events(client, tenant, path)
            if event["delivery"]["status"] == "delivered":
                break
            waits.append(
                await runtime.db.writer.fetchval(
                    "SELECT extract(epoch FROM next_attempt_at - now()) FROM spend_alert_events"
                )
            )
            await asyncio.sleep(0.1)
    assert len(receiver.got) == 3
    assert [e["webhook-id"] for _, e in receiver.got] == [event["id"]] * 3
    assert event["delivery"]["status"] == "delivered" and event["delivery"]["attempts"] == 3
    assert event["delivery"]["delivered_at"] is not None
    # Exponential: the second wait is twice the first (0.2 s, then 0.4 s).
    assert 0.1 < max(waits[:2]) <= 0.2 and 0.3 < max(waits) <= 0.4


async def test_a_receiver_that_keeps_failing_ends_failed(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    alerts = component(runtime, SpendAlerts)
    alerts.retry_seconds, alerts.max_attempts = 0, 3
    async with receiving(500, 500, 500, 500) as receiver:
        made = await client.post(ORG, json=webhook(receiver.url), headers=tenant.admin_headers)
        await spent(runtime, tenant, 100, tenant.project_id)
        for _ in range(5):
            await alerts.run_once()
    [event] = await events(client, tenant, f"{ORG}/{made.json()['id']}")
    assert len(receiver.got) == 3
    assert event["delivery"]["status"] == "failed" and event["delivery"]["attempts"] == 3
    assert event["delivery"]["last_error"] == "HTTP 500"
    assert event["delivery"]["next_attempt_at"] is None


async def test_a_delivery_ends_when_the_alert_no_longer_has_a_webhook(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    alerts = component(runtime, SpendAlerts)
    alerts.retry_seconds = 0
    async with receiving(500) as receiver:
        made = await client.post(ORG, json=webhook(receiver.url), headers=tenant.admin_headers)
        path = f"{ORG}/{made.json()['id']}"
        await spent(runtime, tenant, 100, tenant.project_id)
        assert await alerts.run_once() == (1, 0)
        changed = await client.post(path, json=email(), headers=tenant.admin_headers)
        assert changed.status_code == 200
        assert await alerts.run_once() == (0, 0)
    [event] = await events(client, tenant, path)
    assert len(receiver.got) == 1 and event["delivery"]["status"] == "failed"
    assert event["delivery"]["last_error"] == "the alert no longer has a webhook"
    # Given a webhook again, the alert gets a new secret, shown this once.
    again = await client.post(path, json=webhook(receiver.url), headers=tenant.admin_headers)
    assert again.json()["notification_channel"]["secret"].startswith("whsec_")


async def test_a_url_that_became_private_is_refused_at_delivery(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    alerts = component(runtime, SpendAlerts)
    async with receiving() as receiver:
        made = await client.post(ORG, json=webhook(receiver.url), headers=tenant.admin_headers)
        # The operator no longer allows the host (as if its name now resolved privately).
        alerts.guard = type(alerts.guard).from_settings(
            runtime.settings.model_copy(update={"jan_provider_allowed_hosts": ()})
        )
        await spent(runtime, tenant, 100, tenant.project_id)
        assert await alerts.run_once() == (1, 0)
    assert receiver.got == []
    [event] = await events(client, tenant, f"{ORG}/{made.json()['id']}")
    assert event["delivery"]["status"] == "pending"
    assert event["delivery"]["last_error"].startswith("URL not allowed: 127.0.0.1")


async def test_two_instances_record_and_deliver_each_crossing_once(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, settings: Settings
) -> None:
    second = Runtime(settings.model_copy(update={"jan_function": "chat"}))
    create_app(second)
    await second.open()
    try:
        instances = [component(runtime, SpendAlerts), component(second, SpendAlerts)]
        async with receiving() as receiver:
            ids = []
            for cents in range(100, 110):
                made = await client.post(
                    ORG, json=webhook(receiver.url, cents), headers=tenant.admin_headers
                )
                ids.append(made.json()["id"])
            await spent(runtime, tenant, 200, tenant.project_id)
            rounds = await asyncio.gather(*(a.run_once() for a in instances * 3))
            rounds += await asyncio.gather(*(a.run_once() for a in instances))
        assert sum(recorded for recorded, _ in rounds) == 10
        assert sum(sent for _, sent in rounds) == 10
        recorded = [e["id"] for i in ids for e in await events(client, tenant, f"{ORG}/{i}")]
        assert len(recorded) == 10
        assert sorted(h["webhook-id"] for _, h in receiver.got) == sorted(recorded)
        assert len(receiver.got) == 10
    finally:
        await second.close()


async def test_spend_counts_this_month_only(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    alerts = component(runtime, SpendAlerts)
    await client.post(ORG, json=email(100), headers=tenant.admin_headers)
    last_month = datetime.now(UTC).replace(day=1, hour=0) - timedelta(hours=1)
    await runtime.db.writer.execute(
        "INSERT INTO usage_hourly (organization_id, hour, model, operation, cost_picodollars)"
        " VALUES ($1, $2, 'm1', 'chat.completions', $3)",
        tenant.organization_id,
        last_month.replace(minute=0, second=0, microsecond=0),
        10**14,
    )
    assert await alerts.run_once() == (0, 0)


async def test_real_priced_calls_cross_an_alert(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, fake: FakeUpstream
) -> None:
    """End to end: $1 a token (in and out), so a chat call costs $12 (the fake reports 7 +
    5 tokens). The ledger's rollup, written with the calls' rows, crosses a $20 project
    alert at the second call; the webhook says $24."""
    h = tenant.admin_headers
    price = {"model": "m1", "input": 1e6, "output": 1e6}  # USD per 1M tokens
    priced = await client.post("/v1/organization/model_prices", json=price, headers=h)
    assert priced.status_code == 200, priced.text
    alerts = component(runtime, SpendAlerts)
    path = project_path(tenant.project_id)
    chat = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    async def call() -> None:
        done = await client.post(
            "/v1/chat/completions", json=chat, headers=bearer(tenant.project_key)
        )
        assert done.status_code == 200, done.text
        async with runtime.db.writer.acquire() as conn:
            await component(runtime, Inference).usage.flush(conn)

    async with receiving() as receiver:
        made = (await client.post(path, json=webhook(receiver.url, 2000), headers=h)).json()
        await call()
        assert await alerts.run_once() == (0, 0)  # $12 of $20
        await call()
        assert await alerts.run_once() == (1, 1)
    [(body, headers)] = receiver.got
    sdk = openai.OpenAI(api_key="x", webhook_secret=made["notification_channel"]["secret"])
    data: Any = sdk.webhooks.unwrap(body, headers).to_dict()["data"]
    assert data["alert_id"] == made["id"]
    assert (data["threshold_amount"], data["spend_amount"]) == (2000, 2400)
