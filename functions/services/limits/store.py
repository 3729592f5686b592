"""SQL of the rate-limit definitions (``rate_limits``, ``rate_limit_policies``) and of the
budgets (``budgets``): what the limiter loads per organization and what the
Administration API reads and writes; and what the usage ledger's hourly rollup
(``usage_hourly``) says a budget's scope used in its period.

Functions take the executor first and keyword-only arguments; the caller owns the
transaction. Every query filters by organization_id. A subject is one of ``project_id``,
``api_key_id``, ``user_id``, ``service_account_id`` (a constant of this module picks the
column: no caller text reaches the SQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, LiteralString

import asyncpg

from functions.common.db import Executor
from functions.services.limits.rules import FIELDS, Budget, LedgerScope, LimitSet, OrgRules
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
    budgets: dict[str, list[Budget]] = {}
    for row in await ex.fetch(
        "SELECT coalesce(project_id, api_key_id, user_id, '') AS subject, kind, period, amount"
        " FROM budgets WHERE organization_id = $1",
        organization_id,
    ):
        budgets.setdefault(row["subject"], []).append(
            Budget(row["kind"], row["period"], row["amount"])
        )
    rules.budgets = {subject: tuple(found) for subject, found in budgets.items()}
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


# --- budgets -------------------------------------------------------------------------------
BudgetColumn = Literal["project_id", "api_key_id", "user_id"]
BUDGET_COLUMNS: tuple[BudgetColumn, ...] = ("project_id", "api_key_id", "user_id")


# A budget's subject: its project, API key or user ID, '' for the organization's own (the
# unique index's expression; IDs are unique across kinds).
_SUBJECT = "coalesce(project_id, api_key_id, user_id, '')"


async def budgets_of(
    ex: Executor, *, organization_id: str, subject_id: str
) -> dict[tuple[str, str], int]:
    """The budgets of the organization (``subject_id`` "") or of one project, API key or
    user: (kind, period) → amount."""
    rows = await ex.fetch(
        f"SELECT kind, period, amount FROM budgets"  # noqa: S608  (constant expression)
        f" WHERE organization_id = $1 AND {_SUBJECT} = $2",
        organization_id,
        subject_id,
    )
    return {(row["kind"], row["period"]): row["amount"] for row in rows}


async def token_budgets_of(
    ex: Executor, *, organization_id: str, column: BudgetColumn, ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """The token budgets of these keys or users (those that have any): ID → period → tokens."""
    if column not in BUDGET_COLUMNS:
        raise ValueError(column)
    if not ids:
        return {}
    rows = await ex.fetch(
        f"SELECT {column} AS subject, period, amount FROM budgets"  # noqa: S608
        f" WHERE organization_id = $1 AND {column} = ANY($2::text[]) AND kind = 'tokens'",
        organization_id,
        list(ids),
    )
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row["subject"], {})[row["period"]] = row["amount"]
    return out


async def set_budget(
    ex: Executor,
    *,
    organization_id: str,
    column: BudgetColumn | None,
    subject_id: str,
    kind: str,
    period: str,
    amount: int | None,
) -> bool:
    """Create or replace one budget of the organization (``column`` None, ``subject_id``
    "") or of a project, API key or user; ``amount`` None deletes it. Returns whether a row
    was written or deleted."""
    if amount is None:
        status = await ex.execute(
            f"DELETE FROM budgets WHERE organization_id = $1 AND {_SUBJECT} = $2"  # noqa: S608
            " AND kind = $3 AND period = $4",
            organization_id,
            subject_id,
            kind,
            period,
        )
        return bool(status != "DELETE 0")
    if column is not None and column not in BUDGET_COLUMNS:
        raise ValueError(column)
    project_id, api_key_id, user_id = (
        subject_id if column == name else None for name in BUDGET_COLUMNS
    )
    await ex.execute(
        f"""
        INSERT INTO budgets (organization_id, project_id, api_key_id, user_id, kind, period,
                             amount, currency)
        VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $5 = 'spend' THEN 'USD' END)
        ON CONFLICT (organization_id, ({_SUBJECT}), kind, period)
        DO UPDATE SET amount = excluded.amount, updated_at = now()
        """,  # noqa: S608
        organization_id,
        project_id,
        api_key_id,
        user_id,
        kind,
        period,
        amount,
    )
    return True


_USAGE_SQL = """
SELECT coalesce(sum(u.input_tokens + u.output_tokens), 0)::bigint AS tokens,
       coalesce(sum(u.cost_picodollars), 0)::numeric AS cost
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
     WITH ORDINALITY AS a(org, subject, start, stop, i)
LEFT JOIN usage_hourly u
  ON u.organization_id = a.org AND u.hour >= a.start AND u.hour < a.stop {condition}
GROUP BY a.i ORDER BY a.i
"""
_USAGE_CONDITIONS: dict[str, LiteralString] = {
    "": "",
    "project_id": "AND u.project_id = a.subject",
    "api_key_id": "AND u.api_key_id <> '' AND u.api_key_id = a.subject",
    "user_id": "AND u.user_id <> '' AND u.user_id = a.subject",
}


async def budget_usage(ex: Executor, scopes: Sequence[LedgerScope]) -> list[tuple[int, int]]:
    """What each scope used in its period, per the ledger's hourly rollup: (tokens,
    picodollars), in order. One statement per kind of scope."""
    out: list[tuple[int, int]] = [(0, 0)] * len(scopes)
    for column, condition in _USAGE_CONDITIONS.items():
        picked = [i for i, scope in enumerate(scopes) if scope.column == column]
        if not picked:
            continue
        rows = await ex.fetch(
            _USAGE_SQL.format(condition=condition),
            [scopes[i].organization_id for i in picked],
            [scopes[i].subject for i in picked],
            [scopes[i].period.start for i in picked],
            [scopes[i].period.end for i in picked],
        )
        for i, row in zip(picked, rows, strict=True):
            out[i] = (row["tokens"], int(row["cost"]))
    return out
