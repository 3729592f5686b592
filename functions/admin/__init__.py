"""The `admin` area: OpenAI's Administration API under `/v1/organization/*`.

Each resource module exposes ``routes()``; this table concatenates them.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from functions.admin import (
    admin_keys,
    invites,
    project_keys,
    project_users,
    projects,
    providers,
    service_accounts,
    usage,
    users,
)
from functions.common.runtime import Runtime
from functions.services import bootstrap


def routes(runtime: Runtime) -> list[BaseRoute]:
    bootstrap.install(runtime)
    return [
        *admin_keys.routes(),
        *users.routes(),
        *invites.routes(),
        *projects.routes(),
        *project_users.routes(),
        *service_accounts.routes(),
        *project_keys.routes(),
        *providers.routes(),
        *usage.routes(),
    ]
