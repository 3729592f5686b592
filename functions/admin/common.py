"""What the Administration API handlers share: the caller's organization, paging, body
fields, and loading a project of that organization (404 otherwise; archived refused)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from starlette.requests import Request

from functions.common.auth import Identity, authenticate, identity_of, require_admin
from functions.common.db import Executor
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import limit_param, order_param, runtime_of
from functions.common.principal import Principal
from functions.common.runtime import Runtime


@dataclass(frozen=True)
class Admin:
    """An authorised Administration API call: who, on which organization, with what."""

    runtime: Runtime
    principal: Principal
    organization_id: str

    @property
    def db(self) -> asyncpg.Pool:
        # Admin traffic is light and callers read their own writes at once: use the writer.
        return self.runtime.db.writer

    @property
    def identity(self) -> Identity:
        return identity_of(self.runtime)


async def admin_call(request: Request, *, write: bool) -> Admin:
    principal = await authenticate(request)
    organization_id = require_admin(principal, write=write)
    return Admin(runtime_of(request), principal, organization_id)


def ts(value: datetime | None) -> int | None:
    """OpenAI's timestamps: Unix seconds."""
    return int(value.timestamp()) if value is not None else None


# --- paging --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    after: str | None
    limit: int
    order: str


def page_params(request: Request, *, default_order: str = "asc") -> Page:
    return Page(
        after=request.query_params.get("after") or None,
        limit=limit_param(request),
        order=order_param(request, default=default_order),
    )


async def fetch_page(
    ex: Executor,
    *,
    select: str,
    where: str,
    args: Sequence[Any],
    page: Page,
    id_column: str = "id",
) -> tuple[list[asyncpg.Record], bool]:
    """Rows after the cursor in ID order (IDs are time-ordered), and whether more exist.

    ``select``, ``where`` and ``id_column`` are constant SQL from the callers; values go
    through ``args`` only.
    """
    params = list(args)
    condition = where
    if page.after is not None:
        params.append(page.after)
        condition += f" AND {id_column} {'>' if page.order == 'asc' else '<'} ${len(params)}"
    params.append(page.limit + 1)
    direction = "ASC" if page.order == "asc" else "DESC"
    rows = await ex.fetch(
        f"{select} WHERE {condition} ORDER BY {id_column} {direction} LIMIT ${len(params)}",
        *params,
    )
    return rows[: page.limit], len(rows) > page.limit


# --- body fields ---------------------------------------------------------------------------
def string_field(
    body: dict[str, Any], name: str, *, required: bool, max_length: int = 256
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name)
    if len(value) > max_length:
        raise InvalidRequest(f"'{name}' must be at most {max_length} characters.", param=name)
    return value.strip()


def choice_field(
    body: dict[str, Any], name: str, choices: Sequence[str], *, default: str | None = None
) -> str:
    value = body.get(name, default)
    if value is None:
        raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    if value not in choices:
        raise InvalidRequest(f"'{name}' must be one of: {', '.join(choices)}.", param=name)
    assert isinstance(value, str)
    return value


# --- projects ------------------------------------------------------------------------------
async def load_project(
    ex: Executor, *, organization_id: str, project_id: str, for_write: bool
) -> asyncpg.Record:
    """The organization's project; 404 if it is another's, 400 on writes when archived."""
    row = await ex.fetchrow(
        "SELECT * FROM projects WHERE id = $1 AND organization_id = $2",
        project_id,
        organization_id,
    )
    if row is None:
        raise NotFound(f"No project found with id '{project_id}'.")
    if for_write and row["status"] == "archived":
        raise InvalidRequest(
            f"Project '{project_id}' is archived; archived projects are read-only.",
            code="project_archived",
        )
    return row


def deleted(object_name: str, object_id: str) -> dict[str, Any]:
    return {"object": f"{object_name}.deleted", "id": object_id, "deleted": True}
