"""SQL of the rate-limit definitions (``rate_limits``, ``rate_limit_policies``): what the
limiter loads per organization and what the Administration API reads and writes.

Functions take the executor first and keyword-only arguments; the caller owns the
transaction. Every query filters by organization_id. A subject is one of ``project_id``,
``api_key_id``, ``user_id``, ``service_account_id`` (a constant of this module picks the
column: no caller text reaches the SQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import asyncpg

from functions.common.db import Executor
from functions.services.limits.rules import FIELDS, LimitSet, OrgRules
from functions.services.pricing import Price

Subject = Literal["project_id", "api_key_id", "user_id", "service_account_id"]
SUBJECTS: tuple[Subject, ...] = ("project_id", "api_key_id", "user_id", "service_account_id")
_COLUMNS = ", ".join(FIELDS)

# One row per scope and model: a change replaces the row's values (the unique index is on
# the organization, whichever scope column is set, and the model).
_REPLACE = """ON CONFLICT (organization_id,
                     (coalesce(project_id, api_key_id, user_id, service_account_id, '')), model)
        DO UPDATE SET max_requests_per_1_minute = excluded.max_requests_per_1_minute,
                      max_tokens_per_1_minute = excluded.max_tokens_per_1_minute,
                      max_requests_per_1_day = excluded.max_requests_per_1_day,
                      max_tokens_per_1_day = excluded.max_tokens_per_1_day,
                      max_concurrent_requests = excluded.max_concurrent_requests,
                      updated_at = now()"""


async def load_rules(ex: Executor, *, organization_id: str) -> OrgRules:
    """Everything the limiter needs of one organization: limits, policy and prices."""
    rows = await ex.fetch(
        f"""
        SELECT rl.project_id, rl.api_key_id, rl.user_id, rl.service_account_id, rl.model,
               {_COLUMNS},
               (SELECT coalesce(array_agg(k.id), '{{}}') FROM api_keys k
                WHERE k.service_account_id = rl.service_account_id
                  AND k.organization_id = rl.organization_id) AS account_keys
        FROM rate_limits rl WHERE rl.organization_id = $1
        """,  # noqa: S608  (constant column list)
        organization_id,
    )
    rules = OrgRules()
    for row in rows:
        limits = LimitSet.of(row)
        if row["project_id"] is not None:
            rules.projects[(row["project_id"], row["model"])] = limits
        elif row["api_key_id"] is not None:
            rules.keys[row["api_key_id"]] = limits
        elif row["user_id"] is not None:
            rules.users[row["user_id"]] = limits
        elif row["service_account_id"] is not None:
            for key_id in row["account_keys"]:
                rules.service_accounts[key_id] = (row["service_account_id"], limits)
        else:
            rules.defaults[row["model"]] = limits
    rules.failure_mode = await failure_mode(ex, organization_id=organization_id)
    for row in await ex.fetch(
        "SELECT project_id, model, input, cached_input, output FROM model_prices"
        " WHERE organization_id = $1",
        organization_id,
    ):
        rules.prices[(row["project_id"] or "", row["model"])] = Price.per_million(
            row["input"], row["cached_input"], row["output"]
        )
    return rules


# --- model-scoped limits: organization defaults (no subject) and projects ------------------
async def model_limits(
    ex: Executor, *, organization_id: str, project_id: str | None
) -> dict[str, LimitSet]:
    """The organization's defaults (``project_id`` None) or a project's own limits, by model."""
    rows = await ex.fetch(
        f"""
        SELECT model, {_COLUMNS} FROM rate_limits
        WHERE organization_id = $1 AND model <> ''
          AND project_id IS NOT DISTINCT FROM $2
          AND api_key_id IS NULL AND user_id IS NULL AND service_account_id IS NULL
        """,  # noqa: S608
        organization_id,
        project_id,
    )
    return {row["model"]: LimitSet.of(row) for row in rows}


async def set_model_limits(
    ex: Executor,
    *,
    organization_id: str,
    project_id: str | None,
    model: str,
    changes: dict[str, int | None],
) -> LimitSet:
    """Change some fields of the defaults (``project_id`` None) or a project's limits on a
    model; the others keep their values. Returns the stored limits."""
    stored = await model_limits(ex, organization_id=organization_id, project_id=project_id)
    merged = {**_as_dict(stored.get(model)), **changes}
    await ex.execute(
        f"""
        INSERT INTO rate_limits (organization_id, project_id, model, {_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        {_REPLACE}
        """,  # noqa: S608
        organization_id,
        project_id,
        model,
        *(merged[name] for name in FIELDS),
    )
    return LimitSet.of(merged)


# --- subject-wide limits: API keys, users, service accounts ------------------------------
async def subject_limits(
    ex: Executor, *, organization_id: str, column: Subject, ids: Sequence[str]
) -> dict[str, LimitSet]:
    """The limits of these keys, users or service accounts (those that have any)."""
    if column not in SUBJECTS:
        raise ValueError(column)
    if not ids:
        return {}
    rows = await ex.fetch(
        f"SELECT {column} AS subject, {_COLUMNS} FROM rate_limits"  # noqa: S608
        f" WHERE organization_id = $1 AND {column} = ANY($2::text[])",
        organization_id,
        list(ids),
    )
    return {row["subject"]: LimitSet.of(row) for row in rows}


async def set_subject_limits(
    ex: Executor,
    *,
    organization_id: str,
    column: Subject,
    subject_id: str,
    changes: dict[str, int | None],
) -> LimitSet:
    """Change some limits of one key, user or service account. Returns the stored limits."""
    current = (
        await subject_limits(ex, organization_id=organization_id, column=column, ids=[subject_id])
    ).get(subject_id)
    merged = {**_as_dict(current), **changes}
    await ex.execute(
        f"""
        INSERT INTO rate_limits (organization_id, {column}, {_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        {_REPLACE}
        """,  # noqa: S608
        organization_id,
        subject_id,
        *(merged[name] for name in FIELDS),
    )
    return LimitSet.of(merged)


def _as_dict(limits: LimitSet | None) -> dict[str, int | None]:
    values = (limits or LimitSet()).values()
    return dict(zip(FIELDS, values, strict=True))


# --- the failure policy ---------------------------------------------------------------
async def failure_mode(ex: Executor, *, organization_id: str) -> str | None:
    """The organization's own choice, None when it follows the setting."""
    value: str | None = await ex.fetchval(
        "SELECT failure_mode FROM rate_limit_policies WHERE organization_id = $1",
        organization_id,
    )
    return value


async def set_failure_mode(ex: Executor, *, organization_id: str, mode: str | None) -> None:
    if mode is None:
        await ex.execute(
            "DELETE FROM rate_limit_policies WHERE organization_id = $1", organization_id
        )
        return
    await ex.execute(
        """
        INSERT INTO rate_limit_policies (organization_id, failure_mode) VALUES ($1, $2)
        ON CONFLICT (organization_id)
        DO UPDATE SET failure_mode = excluded.failure_mode, updated_at = now()
        """,
        organization_id,
        mode,
    )


# --- which models a project can use (when this process has no inference catalog) ---------
async def stored_models(ex: Executor, *, organization_id: str, project_id: str | None) -> set[str]:
    """The models of the organization's active providers (with ``project_id``: those the
    project sees, its own and the organization's; without: every provider's), discovered
    or declared."""
    rows: Iterable[asyncpg.Record] = await ex.fetch(
        """
        SELECT unnest(p.static_models) AS model FROM model_providers p
        WHERE p.organization_id = $1 AND p.active
          AND ($2::text IS NULL OR p.project_id IS NULL OR p.project_id = $2)
        UNION
        SELECT m.model FROM model_provider_models m
        JOIN model_providers p ON p.id = m.provider_id AND p.organization_id = m.organization_id
        WHERE p.organization_id = $1 AND p.active
          AND ($2::text IS NULL OR p.project_id IS NULL OR p.project_id = $2)
        """,
        organization_id,
        project_id,
    )
    return {row["model"] for row in rows}
