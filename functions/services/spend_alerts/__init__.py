"""Spend alerts: OpenAI's organization and project spend alerts, recorded when crossed and
delivered to a webhook (a Jan extension) when the alert has one.

``SpendAlerts`` runs in the processes that serve models (where spend happens; they are
kept warm), every ``JAN_SPEND_ALERT_INTERVAL_SECONDS``:

- **check**: the month-to-date spend (``usage_hourly.cost_picodollars``) of every alert's
  organization or project; an alert at or past its threshold gets one crossing a month
  (``spend_alert_events``, unique per alert and month: ``ON CONFLICT DO NOTHING``, so one
  instance records it however many look);
- **deliver**: due webhook deliveries are claimed with ``FOR UPDATE SKIP LOCKED`` and a
  lease (no two instances send one event at once), POSTed signed (``webhooks``) with a
  bounded timeout, and retried with exponential backoff (``retry_seconds``, doubling) up to
  ``max_attempts``, then ``failed``. An email channel is recorded only: no mail is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from functions.common.crypto import DecryptError, SecretBox
from functions.common.db import CONNECTION_ERRORS
from functions.common.runtime import Component, NotOpen, Runtime
from functions.common.upstream import ProviderGuard
from functions.services.spend_alerts import store, webhooks

log = logging.getLogger(__name__)

EVENT_TYPE = "spend_alert.triggered"
CLAIM_SLACK_SECONDS = 30.0  # a claimed delivery's lease beyond the attempt's timeout


def month_start(now: datetime) -> datetime:
    """The calendar month's first instant (UTC): the period alerts count spend over."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def event_data(row: asyncpg.Record) -> dict[str, Any]:
    """What a crossing says (the webhook's ``data``, and the events list's fields)."""
    return {
        "alert_id": row["alert_id"],
        "project_id": row["project_id"],
        "threshold_amount": row["threshold_amount"],
        "spend_amount": int(row["spend_cents"]),  # cents, rounded down
        "currency": row["currency"],
        "period_start": int(row["period_start"].timestamp()),
    }


def payload(row: asyncpg.Record) -> bytes:
    """The webhook's body, shaped like OpenAI's webhook events."""
    event = {
        "id": row["id"],
        "object": "event",
        "type": EVENT_TYPE,
        "created_at": int(row["crossed_at"].timestamp()),
        "data": event_data(row),
    }
    return json.dumps(event, separators=(",", ":")).encode()


class SpendAlerts(Component):
    def __init__(
        self,
        runtime: Runtime,
        box: SecretBox | None,
        guard: ProviderGuard,
        *,
        interval_seconds: float,
        timeout_seconds: float = 10.0,
        retry_seconds: float = 30.0,
        max_attempts: int = 8,
        batch: int = 20,
    ) -> None:
        self.runtime = runtime
        self.box = box
        self.guard = guard
        self.interval_seconds = interval_seconds
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.max_attempts = max_attempts
        self.batch = batch
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> tuple[int, int]:
        """One round: crossings recorded, webhooks delivered."""
        return await self.check(), await self.deliver()

    async def check(self) -> int:
        """Record this month's new crossings; how many this instance recorded."""
        period = month_start(datetime.now(UTC))
        db = self.runtime.db.writer
        recorded = 0
        for alert in await store.crossed(db, period_start=period):
            if await store.record_crossing(db, alert=alert, period_start=period) is not None:
                recorded += 1
                log.info(
                    "spend alert crossed",
                    extra={"alert_id": alert["id"], "organization_id": alert["organization_id"]},
                )
        return recorded

    async def deliver(self) -> int:
        """Send the due webhooks (one batch); how many were delivered."""
        lease = self.timeout_seconds + CLAIM_SLACK_SECONDS
        db = self.runtime.db.writer
        claimed = await store.claim_due(db, limit=self.batch, lease_seconds=lease)
        outcomes = await asyncio.gather(*(self._attempt(row) for row in claimed))
        return sum(outcomes)

    async def _attempt(self, row: asyncpg.Record) -> bool:
        db = self.runtime.db.writer
        webhook = row["notification_channel"].get("type") == "webhook"
        error = await self._send(row) if webhook else "the alert no longer has a webhook"
        if error is None:
            await store.delivered(db, event_id=row["id"])
            return True
        attempts: int = row["attempts"]
        retry_in = (
            self.retry_seconds * 2 ** (attempts - 1)
            if attempts < self.max_attempts and webhook
            else None
        )
        await store.not_delivered(db, event_id=row["id"], error=error, retry_in=retry_in)
        log.warning(
            "spend alert webhook not delivered",
            extra={"event_id": row["id"], "attempt": attempts, "error": error},
        )
        return False

    async def _send(self, row: asyncpg.Record) -> str | None:
        if row["secret_ciphertext"] is None:
            return "the webhook has no secret"
        if self.box is None:
            return "no MODEL_PROVIDER_SECRET to read the webhook's secret with"
        try:
            secret = self.box.decrypt(row["secret_ciphertext"], associated=row["alert_id"])
        except DecryptError:
            return "the webhook's secret does not decrypt (MODEL_PROVIDER_SECRET changed?)"
        body = payload(row)
        headers = webhooks.signed_headers(secret, row["id"], int(time.time()), body)
        url = row["notification_channel"]["url"]
        return await webhooks.post(self.http, self.guard, url, headers, body)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise NotOpen("spend alerts not started")
        return self._http

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._http = webhooks.client(self.timeout_seconds)
        if self.interval_seconds > 0:
            self._task = asyncio.get_running_loop().create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _forever(self) -> None:
        # A random first wait spreads instances that start together over the interval.
        await asyncio.sleep(self.interval_seconds * random.uniform(0.2, 1.0))  # noqa: S311
        while True:
            try:
                await self.run_once()
            except CONNECTION_ERRORS as exc:
                log.warning("spend alerts skipped: database away", extra={"error": repr(exc)})
            except Exception:
                log.exception("spend alerts round failed")
            await asyncio.sleep(self.interval_seconds)
