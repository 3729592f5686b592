"""The `admin` area: OpenAI's Administration API under `/v1/organization/*`.

Each resource module exposes ``routes()``; this table concatenates them. Modules owned by
other features (model providers, usage) join the same way through ``_OPTIONAL``.
"""

from __future__ import annotations

import importlib

from starlette.routing import BaseRoute

from functions.admin import (
    admin_keys,
    invites,
    project_keys,
    project_users,
    projects,
    service_accounts,
    users,
)
from functions.common import bootstrap
from functions.common.runtime import Runtime

_OPTIONAL = ("providers", "usage")


def routes(runtime: Runtime) -> list[BaseRoute]:
    bootstrap.install(runtime)
    table: list[BaseRoute] = [
        *admin_keys.routes(),
        *users.routes(),
        *invites.routes(),
        *projects.routes(),
        *project_users.routes(),
        *service_accounts.routes(),
        *project_keys.routes(),
    ]
    for name in _OPTIONAL:
        try:
            module = importlib.import_module(f"functions.admin.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"functions.admin.{name}":
                raise
            continue
        table.extend(module.routes(runtime))
    return table
