"""Operator commands: `jan-server admin create-org | create-admin-key | list-orgs`, and
`jan-server export audit | usage`.

Keys are printed once, alone on their own line, and never logged. Exports write JSON
lines to stdout, read through a server-side cursor in one read-only snapshot, so any size
streams in constant memory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from functions.common import local, migrate
from functions.common.db import init_connection
from functions.services import tenancy

EXIT_NOT_FOUND = 1


def add_admin_commands(commands: Any) -> None:
    admin = commands.add_parser("admin", help="manage organizations and admin keys")
    sub = admin.add_subparsers(dest="admin_command", required=True, parser_class=type(admin))

    create_org = sub.add_parser("create-org", help="create an organization and an admin key")
    create_org.add_argument("--name", required=True, help="organization name")
    create_org.add_argument("--owner-email", help="make this e-mail's user its owner")
    create_org.set_defaults(run=lambda a: _run(_create_org, a))

    create_key = sub.add_parser("create-admin-key", help="print a new admin key for an org")
    create_key.add_argument("--org", required=True, help="organization ID (org_…)")
    create_key.add_argument("--name", default="operator key", help="key name")
    create_key.set_defaults(run=lambda a: _run(_create_admin_key, a))

    list_orgs = sub.add_parser("list-orgs", help="list organizations")
    list_orgs.set_defaults(run=lambda a: _run(_list_orgs, a))


def add_export_commands(commands: Any) -> None:
    export = commands.add_parser(
        "export", help="write the audit log or the usage ledger as JSON lines to stdout"
    )
    export.add_argument("what", choices=["audit", "usage"], help="audit events or ledger rows")
    export.add_argument(
        "--since", required=True, type=_instant, help="from this instant on (ISO 8601 or Unix s)"
    )
    export.add_argument("--until", type=_instant, help="before this instant (default: now)")
    export.add_argument("--organization", help="one organization (org_…; default: every one)")
    export.set_defaults(run=lambda a: _run(_export, a))


def _instant(value: str) -> datetime:
    """An instant from the command line: Unix seconds, or ISO 8601 (UTC unless it says)."""
    try:
        if value.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            f"not an instant: {value!r} (ISO 8601, such as 2025-01-31T00:00:00Z, or Unix seconds)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _run(
    command: Callable[[asyncpg.Connection, bytes, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
) -> int:
    settings = local.load()
    assert settings.db_postgresql_write_dsn is not None and settings.apikey_secret is not None
    dsn = settings.db_postgresql_write_dsn.get_secret_value()
    secret = settings.apikey_secret.get_secret_value().encode()

    async def main() -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        await init_connection(conn)
        try:
            if not (await migrate.status(conn, migrate.load())).current:
                print(
                    "jan-server: migrations pending; run `jan-server migrate apply`",
                    file=sys.stderr,
                )
                return 1
            return await command(conn, secret, args)
        finally:
            await conn.close()

    return asyncio.run(main())


async def _create_org(conn: asyncpg.Connection, secret: bytes, args: argparse.Namespace) -> int:
    async with conn.transaction():
        org = await tenancy.create_organization(conn, name=args.name)
        if args.owner_email:
            email = args.owner_email.strip().lower()
            user_id = await conn.fetchval("SELECT id FROM users WHERE lower(email) = $1", email)
            if user_id is None:
                user_id = (await tenancy.create_user(conn, email=email))["id"]
            await tenancy.set_organization_role(
                conn, organization_id=org["id"], user_id=user_id, role="owner"
            )
        key = await tenancy.create_api_key(
            conn,
            apikey_secret=secret,
            kind="admin",
            organization_id=org["id"],
            name="operator key",
        )
    print(f"organization: {org['id']}")
    print(key.plaintext)
    return 0


async def _create_admin_key(
    conn: asyncpg.Connection, secret: bytes, args: argparse.Namespace
) -> int:
    if await tenancy.get_organization(conn, organization_id=args.org) is None:
        print(f"jan-server: no organization {args.org}", file=sys.stderr)
        return EXIT_NOT_FOUND
    key = await tenancy.create_api_key(
        conn, apikey_secret=secret, kind="admin", organization_id=args.org, name=args.name
    )
    print(key.plaintext)
    return 0


async def _list_orgs(conn: asyncpg.Connection, secret: bytes, args: argparse.Namespace) -> int:
    for org in await tenancy.list_organizations(conn):
        default = "  (default)" if org["is_default"] else ""
        print(f"{org['id']}  {org['created_at']:%Y-%m-%d}  {org['name']}{default}")
    return 0


async def _export(conn: asyncpg.Connection, secret: bytes, args: argparse.Namespace) -> int:
    # Imported here: `jan-server serve` builds this parser too, and must not load the areas.
    from functions.services import ledger
    from functions.services.audit import store as audit_store

    until = args.until or datetime.now(UTC)
    out = sys.stdout.buffer
    lines: AsyncIterator[bytes]
    if args.what == "audit":
        where = audit_store.Filter(
            organization_id=args.organization, effective_gte=args.since, effective_lt=until
        )
        lines = (_audit_line(row) async for row in audit_store.stream(conn, where=where))
    else:
        rows = ledger.stream(conn, since=args.since, until=until, organization_id=args.organization)
        lines = (_usage_line(row) async for row in rows)
    count, chunk = 0, []
    # One snapshot: what a long export reads is consistent, whatever is written meanwhile.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for line in lines:
            chunk.append(line)
            if len(chunk) == 500:
                out.write(b"".join(chunk))
                count, chunk = count + len(chunk), []
    out.write(b"".join(chunk))
    out.flush()
    print(f"jan-server: exported {count + len(chunk)} {args.what} record(s)", file=sys.stderr)
    return 0


def _audit_line(row: asyncpg.Record) -> bytes:
    """An audit event as the API shows it, with its organization."""
    from functions.admin.audit_logs import render as render_event

    return orjson.dumps({"organization_id": row["organization_id"], **render_event(row)}) + b"\n"


def _usage_line(row: asyncpg.Record) -> bytes:
    """A ledger row: its columns, times in RFC 3339 (UTC), costs in whole picodollars."""
    return orjson.dumps(dict(row), default=_number, option=orjson.OPT_UTC_Z) + b"\n"


def _number(value: Any) -> int | str:
    """A numeric column (``Decimal``): an integer when whole, else its exact text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    raise TypeError(type(value).__name__)
