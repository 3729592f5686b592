"""The SQL of spend alerts: the alerts (Administration API) and their crossings (the
check and the webhook deliveries of ``SpendAlerts``).

An organization's alerts have ``project_id`` NULL; a project's, its ID. Lists page by ID
(time-ordered) with ``after`` and ``before`` cursors, one row more than the page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from functions.common import ids
from functions.common.db import Executor
from functions.services.pricing import PICODOLLARS_PER_CENT

ALERT_PREFIX = "alert_"
EVENT_PREFIX = "evt_"

# The alert as the API shows it, with when it was last crossed (Jan's last_triggered_at).
_ALERT = """
SELECT a.*, (SELECT max(e.crossed_at) FROM spend_alert_events e WHERE e.alert_id = a.id)
       AS last_triggered_at
FROM spend_alerts a
"""
_SCOPE = "a.organization_id = $1 AND a.project_id IS NOT DISTINCT FROM $2"


async def _page(
    ex: Executor,
    select: str,
    where: str,
    args: list[Any],
    *,
    id_column: str,
    limit: int,
    order: str,
    after: str | None,
    before: str | None,
) -> list[asyncpg.Record]:
    """Up to ``limit + 1`` rows between the cursors, in ``order`` (``select``, ``where``
    and ``id_column`` are this module's constants; ``order`` is asc or desc)."""
    params = list(args)
    forward = order == "asc"
    if after is not None:
        params.append(after)
        where += f" AND {id_column} {'>' if forward else '<'} ${len(params)}"
    if before is not None:
        params.append(before)
        where += f" AND {id_column} {'<' if forward else '>'} ${len(params)}"
    # Paging back from ``before`` alone reads the nearest rows first, then turns them round.
    backwards = before is not None and after is None
    direction = "ASC" if forward != backwards else "DESC"
    params.append(limit + 1)
    rows = await ex.fetch(
        f"{select} WHERE {where} ORDER BY {id_column} {direction} LIMIT ${len(params)}", *params
    )
    if backwards:
        kept = list(reversed(rows[:limit]))
        return kept + rows[limit:]  # the extra row, if any, still says "more"
    return list(rows)


# --- alerts ------------------------------------------------------------------------------
def new_alert_id() -> str:
    return ids.new_id(ALERT_PREFIX)


async def create_alert(
    ex: Executor,
    *,
    alert_id: str,
    organization_id: str,
    project_id: str | None,
    threshold_amount: int,
    channel: dict[str, Any],
    secret_ciphertext: bytes | None,
) -> asyncpg.Record:
    """``secret_ciphertext``: the webhook's signing secret, encrypted for ``alert_id``."""
    await ex.execute(
        "INSERT INTO spend_alerts (id, organization_id, project_id, threshold_amount,"
        " notification_channel, secret_ciphertext) VALUES ($1, $2, $3, $4, $5, $6)",
        alert_id,
        organization_id,
        project_id,
        threshold_amount,
        channel,
        secret_ciphertext,
    )
    row = await get_alert(
        ex, organization_id=organization_id, project_id=project_id, alert_id=alert_id
    )
    assert row is not None
    return row


async def get_alert(
    ex: Executor, *, organization_id: str, project_id: str | None, alert_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        f"{_ALERT} WHERE {_SCOPE} AND a.id = $3", organization_id, project_id, alert_id
    )


async def list_alerts(
    ex: Executor,
    *,
    organization_id: str,
    project_id: str | None,
    limit: int,
    order: str,
    after: str | None,
    before: str | None,
) -> list[asyncpg.Record]:
    return await _page(
        ex,
        _ALERT,
        _SCOPE,
        [organization_id, project_id],
        id_column="a.id",
        limit=limit,
        order=order,
        after=after,
        before=before,
    )


async def update_alert(
    ex: Executor,
    *,
    organization_id: str,
    project_id: str | None,
    alert_id: str,
    threshold_amount: int,
    channel: dict[str, Any],
    secret_ciphertext: bytes | None,
) -> asyncpg.Record | None:
    done = await ex.fetchval(
        "UPDATE spend_alerts SET threshold_amount = $4, notification_channel = $5,"
        " secret_ciphertext = $6, updated_at = now() WHERE organization_id = $1"
        " AND project_id IS NOT DISTINCT FROM $2 AND id = $3 RETURNING id",
        organization_id,
        project_id,
        alert_id,
        threshold_amount,
        channel,
        secret_ciphertext,
    )
    if done is None:
        return None
    return await get_alert(
        ex, organization_id=organization_id, project_id=project_id, alert_id=alert_id
    )


async def delete_alert(
    ex: Executor, *, organization_id: str, project_id: str | None, alert_id: str
) -> bool:
    done = await ex.fetchval(
        "DELETE FROM spend_alerts WHERE organization_id = $1"
        " AND project_id IS NOT DISTINCT FROM $2 AND id = $3 RETURNING id",
        organization_id,
        project_id,
        alert_id,
    )
    return done is not None


async def list_events(
    ex: Executor,
    *,
    alert_id: str,
    limit: int,
    order: str,
    after: str | None,
    before: str | None,
) -> list[asyncpg.Record]:
    """The alert's crossings (the caller has checked the alert is the caller's)."""
    return await _page(
        ex,
        "SELECT e.*, a.project_id, a.currency FROM spend_alert_events e"
        " JOIN spend_alerts a ON a.id = e.alert_id",
        "e.alert_id = $1",
        [alert_id],
        id_column="e.id",
        limit=limit,
        order=order,
        after=after,
        before=before,
    )


# --- crossings -----------------------------------------------------------------------------
async def crossed(ex: Executor, *, period_start: datetime) -> list[asyncpg.Record]:
    """Alerts whose scope has spent at least their threshold since ``period_start`` (a
    month's start) and have no crossing recorded for it: the usage ledger's hourly
    rollups, of the organization or the alert's project."""
    return await ex.fetch(
        """
        SELECT a.id, a.organization_id, a.threshold_amount, s.spent,
               a.notification_channel->>'type' = 'webhook' AS webhook
        FROM spend_alerts a
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(h.cost_picodollars), 0) AS spent
            FROM usage_hourly h
            WHERE h.organization_id = a.organization_id AND h.hour >= $1
              AND (a.project_id IS NULL OR h.project_id = a.project_id)
        ) s
        WHERE s.spent >= a.threshold_amount::numeric * $2
          AND NOT EXISTS (SELECT 1 FROM spend_alert_events e
                          WHERE e.alert_id = a.id AND e.period_start = $1)
        """,
        period_start,
        PICODOLLARS_PER_CENT,
    )


async def record_crossing(
    ex: Executor, *, alert: asyncpg.Record, period_start: datetime
) -> str | None:
    """The crossing's event ID, or None when another instance recorded it first. An alert
    with a webhook gets a delivery due now."""
    event_id: str | None = await ex.fetchval(
        "INSERT INTO spend_alert_events (id, alert_id, organization_id, period_start,"
        " threshold_amount, spend_cents, delivery, next_attempt_at)"
        " VALUES ($1, $2, $3, $4, $5, $6 / $7::numeric, $8, CASE WHEN $9 THEN now() END)"
        " ON CONFLICT (alert_id, period_start) DO NOTHING RETURNING id",
        ids.new_id(EVENT_PREFIX),
        alert["id"],
        alert["organization_id"],
        period_start,
        alert["threshold_amount"],
        alert["spent"],
        PICODOLLARS_PER_CENT,
        "pending" if alert["webhook"] else "none",
        alert["webhook"],
    )
    return event_id


# --- deliveries ------------------------------------------------------------------------------
async def claim_due(ex: Executor, *, limit: int, lease_seconds: float) -> list[asyncpg.Record]:
    """Take up to ``limit`` due deliveries: each counts an attempt and is not due again for
    ``lease_seconds`` (longer than an attempt takes), so no other instance sends it
    meanwhile; rows another instance is claiming are skipped, not waited for."""
    return await ex.fetch(
        """
        UPDATE spend_alert_events e
        SET attempts = e.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
        FROM spend_alerts a
        WHERE a.id = e.alert_id AND e.id IN (
            SELECT id FROM spend_alert_events
            WHERE delivery = 'pending' AND next_attempt_at <= now()
            ORDER BY next_attempt_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING e.*, a.project_id, a.currency, a.notification_channel, a.secret_ciphertext
        """,
        limit,
        lease_seconds,
    )


async def delivered(ex: Executor, *, event_id: str) -> None:
    await ex.execute(
        "UPDATE spend_alert_events SET delivery = 'delivered', delivered_at = now(),"
        " next_attempt_at = NULL, last_error = NULL WHERE id = $1",
        event_id,
    )


async def not_delivered(ex: Executor, *, event_id: str, error: str, retry_in: float | None) -> None:
    """A failed attempt: due again in ``retry_in`` seconds, or ``failed`` for good (None)."""
    await ex.execute(
        "UPDATE spend_alert_events SET last_error = $2,"
        " delivery = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE 'pending' END,"
        " next_attempt_at = now() + make_interval(secs => $3::float8) WHERE id = $1",
        event_id,
        error,
        retry_in,
    )
