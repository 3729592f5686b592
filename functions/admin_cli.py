"""Operator commands: `jan-server admin create-org | create-admin-key | list-orgs`.

Keys are printed once, alone on their own line, and never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from functions.common import local, migrate
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
