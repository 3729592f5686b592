"""First start: the default organization exists; in embedded mode, first keys are printed.

Built by the app factory for the `auth` and `admin` areas (once per process). In embedded
(local) mode the very first start also creates a project in the default organization and
prints one admin key and one project key on stdout, each on its own line, so a fresh
install is usable without a browser. A marker row makes sure that happens exactly once,
even across restarts and concurrent starts; the keys never go to the logs.
"""

from __future__ import annotations

from functions.common.runtime import Component, Runtime
from functions.services import tenancy

MARKER = "bootstrap.first_keys_issued"


class Bootstrap(Component):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self) -> None:
        await bootstrap(self.runtime)


async def bootstrap(runtime: Runtime) -> None:
    secret = runtime.settings.apikey_secret
    assert secret is not None
    lines: list[str] = []
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        org_id = await tenancy.ensure_default_organization(conn)
        if not runtime.settings.jan_embedded:
            return
        first = await conn.fetchval(
            "INSERT INTO system_settings (key, value) VALUES ($1, $2)"
            " ON CONFLICT (key) DO NOTHING RETURNING key",
            MARKER,
            {"organization_id": org_id},
        )
        if first is None:
            return
        project = await tenancy.create_project(
            conn, organization_id=org_id, name=tenancy.DEFAULT_PROJECT_NAME
        )
        for kind, name, project_id in (
            ("admin", "bootstrap admin key", None),
            ("project", "bootstrap project key", project["id"]),
        ):
            created = await tenancy.create_api_key(
                conn,
                apikey_secret=secret.get_secret_value().encode(),
                kind=kind,
                organization_id=org_id,
                project_id=project_id,
                name=name,
            )
            lines.append(f"JAN_{kind.upper()}_KEY={created.plaintext}")
    # Printed only after the transaction committed, so a printed key always works.
    print("jan-server: first start; keys for the default organization (shown once):", flush=True)
    for line in lines:
        print(line, flush=True)
