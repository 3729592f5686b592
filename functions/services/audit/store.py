"""SQL of the audit log: append, list with OpenAI's filters, export, expire."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from functions.common import ids
from functions.common.db import AnyConnection, Executor

PREFIX = "audit_log-"


async def insert(
    ex: Executor,
    *,
    organization_id: str,
    type: str,
    project_id: str | None,
    actor_type: str | None,
    actor_user_id: str | None,
    actor_email: str | None,
    actor_api_key_id: str | None,
    actor_service_account_id: str | None,
    ip_address: str | None,
    user_agent: str | None,
    resource_id: str | None,
    details: dict[str, Any],
) -> None:
    # The actor's e-mail as it is now, unless the caller knows it (a failed sign-in).
    await ex.execute(
        """
        INSERT INTO audit_logs (id, organization_id, type, project_id, actor_type,
                                actor_user_id, actor_email, actor_api_key_id,
                                actor_service_account_id, ip_address, user_agent,
                                resource_id, details)
        VALUES ($1, $2, $3, $4, $5, $6,
                coalesce($7, (SELECT email FROM users WHERE id = $6)),
                $8, $9, $10, $11, $12, $13)
        """,
        ids.new_id(PREFIX),
        organization_id,
        type,
        project_id,
        actor_type,
        actor_user_id,
        actor_email,
        actor_api_key_id,
        actor_service_account_id,
        ip_address,
        user_agent,
        resource_id,
        details,
    )


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events: OpenAI's list filters (each list: any of its values). ``organization_id``
    None: every organization's (the operator's export)."""

    organization_id: str | None
    effective_gt: datetime | None = None
    effective_gte: datetime | None = None
    effective_lt: datetime | None = None
    effective_lte: datetime | None = None
    project_ids: Sequence[str] = ()
    types: Sequence[str] = ()
    actor_ids: Sequence[str] = ()
    actor_emails: Sequence[str] = ()
    resource_ids: Sequence[str] = ()

    def where(self, args: list[Any]) -> list[str]:
        """The conditions on ``a`` (audit_logs), their values appended to ``args``.

        Only constant SQL goes in: column names and "$n" placeholders; every value travels
        as a parameter."""

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        where = []
        if self.organization_id is not None:
            where.append(f"a.organization_id = {param(self.organization_id)}")
        for op, value in (
            (">", self.effective_gt),
            (">=", self.effective_gte),
            ("<", self.effective_lt),
            ("<=", self.effective_lte),
        ):
            if value is not None:
                where.append(f"a.effective_at {op} {param(value)}")
        for column, values in (
            ("a.project_id", self.project_ids),
            ("a.type", self.types),
            ("a.resource_id", self.resource_ids),
        ):
            if values:
                where.append(f"{column} = ANY({param(list(values))}::text[])")
        if self.actor_ids:
            n = param(list(self.actor_ids))
            where.append(
                f"(a.actor_user_id = ANY({n}::text[]) OR a.actor_api_key_id = ANY({n}::text[])"
                f" OR a.actor_service_account_id = ANY({n}::text[]))"
            )
        if self.actor_emails:
            emails = [e.lower() for e in self.actor_emails]
            where.append(f"lower(a.actor_email) = ANY({param(emails)}::text[])")
        return where or ["true"]


_SELECT = (
    "SELECT a.*, p.name AS project_name FROM audit_logs a"
    " LEFT JOIN projects p ON p.id = a.project_id AND p.organization_id = a.organization_id"
)


async def list_events(
    ex: Executor,
    *,
    where: Filter,
    after: str | None,
    before: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to ``limit`` events, newest first: older than ``after``, or (``before`` alone) the
    ones just newer than ``before``, still newest first."""
    args: list[Any] = []
    conditions = where.where(args)
    if after is not None:
        args.append(after)
        conditions.append(f"a.id < ${len(args)}")
    if before is not None:
        args.append(before)
        conditions.append(f"a.id > ${len(args)}")
    ascending = before is not None and after is None
    args.append(limit)
    sql = (
        f"{_SELECT} WHERE {' AND '.join(conditions)}"
        f" ORDER BY a.id {'ASC' if ascending else 'DESC'} LIMIT ${len(args)}"
    )
    rows = await ex.fetch(sql, *args)
    return rows[::-1] if ascending else rows


async def exists(ex: Executor, *, organization_id: str, event_id: str) -> bool:
    found = await ex.fetchval(
        "SELECT 1 FROM audit_logs WHERE organization_id = $1 AND id = $2",
        organization_id,
        event_id,
    )
    return bool(found)


async def stream(
    conn: AnyConnection, *, where: Filter, prefetch: int = 500
) -> AsyncIterator[asyncpg.Record]:
    """Every matching event, oldest first, through a server-side cursor (``prefetch`` rows
    at a time); the caller holds ``conn`` in a transaction."""
    args: list[Any] = []
    sql = f"{_SELECT} WHERE {' AND '.join(where.where(args))} ORDER BY a.id"
    async for row in conn.cursor(sql, *args, prefetch=prefetch):
        yield row


async def expire(ex: Executor, *, organization_id: str, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the organization's events older than ``before``, through
    the one function the append-only trigger lets delete."""
    count: int = await ex.fetchval(
        "SELECT audit_logs_expire($1, $2, $3)", organization_id, before, limit
    )
    return count
