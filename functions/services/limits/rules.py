"""What limits apply to a model call: the stored definitions of one organization, and the
plan they make for one caller and model (the counters to check, with their capacity).

Scopes, each a set of counters of its own:

- the project on the model (OpenAI's ``project.rate_limit``): the project's own values,
  field by field, else the organization's default for the model;
- the API key, the service account that owns the key, and the user (the caller's own
  user, or the user who owns the key), each over every model;
- a guest user with no limits of its own: the guest defaults from the settings.

Budgets (``budgets``): OpenAI's hard spend limits (cents a month, of the organization or
a project) and Jan's token budgets (tokens a calendar day or month, UTC, of the
organization, a project, an API key or a user), each a counter of the plan too.

A call must fit every counter of its plan. Counters are token buckets (capacity = the
limit, refilled continuously over the period, as OpenAI's limits are) except concurrent
requests, a count of calls in flight, and budgets: buckets that do not refill, one per
calendar period (its key ends with the period, ``…:2026-12`` or ``…:2026-12-05``, so a
new period starts a fresh counter and a plan lasts until its first period ends).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from functions.common.principal import Principal
from functions.services.pricing import PICODOLLARS_PER_CENT, SPEND_UNIT, Price

# Counter kinds: rate limits, then budgets (spend in ``SPEND_UNIT``s; tokens).
REQUESTS, TOKENS, CONCURRENT, SPEND, TOKEN_BUDGET = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class LimitSet:
    """The limits of one scope; None: not set (inherit, or no limit), 0: no limit."""

    max_requests_per_1_minute: int | None = None
    max_tokens_per_1_minute: int | None = None
    max_requests_per_1_day: int | None = None
    max_tokens_per_1_day: int | None = None
    max_concurrent_requests: int | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any] | asyncpg.Record) -> LimitSet:
        return cls(**{name: values[name] for name in FIELDS})

    def over(self, default: LimitSet | None) -> LimitSet:
        """These limits, each unset one taken from ``default``."""
        if default is None:
            return self
        return LimitSet(
            *(
                mine if mine is not None else theirs
                for mine, theirs in zip(self.values(), default.values(), strict=True)
            )
        )

    def values(self) -> tuple[int | None, ...]:
        return (
            self.max_requests_per_1_minute,
            self.max_tokens_per_1_minute,
            self.max_requests_per_1_day,
            self.max_tokens_per_1_day,
            self.max_concurrent_requests,
        )

    def effective(self) -> dict[str, int]:
        """As the API shows them: every field, 0 for no limit."""
        return {name: value or 0 for name, value in zip(FIELDS, self.values(), strict=True)}


FIELDS = tuple(f.name for f in fields(LimitSet))
UNSET = LimitSet()


@dataclass(frozen=True, slots=True)
class Dimension:
    field: str
    kind: int
    period: float  # seconds
    suffix: str  # the counter's name ends with it
    label: str  # as OpenAI's messages say it
    reason: str  # the refusal metric's label


DIMENSIONS = (
    Dimension("max_requests_per_1_minute", REQUESTS, 60.0, "rpm", "requests per min (RPM)",
              "requests_per_minute"),
    Dimension("max_tokens_per_1_minute", TOKENS, 60.0, "tpm", "tokens per min (TPM)",
              "tokens_per_minute"),
    Dimension("max_requests_per_1_day", REQUESTS, 86400.0, "rpd", "requests per day (RPD)",
              "requests_per_day"),
    Dimension("max_tokens_per_1_day", TOKENS, 86400.0, "tpd", "tokens per day (TPD)",
              "tokens_per_day"),
    Dimension("max_concurrent_requests", CONCURRENT, 0.0, "conc", "concurrent requests",
              "concurrent_requests"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Spec:
    """One counter a call must fit: its shared name, kind and capacity."""

    key: str
    kind: int
    capacity: int
    rate: float  # units refilled per second (0 for concurrent requests)
    label: str
    reason: str
    scope: str  # "project" | "api_key" | "service_account" | "user" | "guest" (metrics)
    subject: str  # what the caller reads in a refusal ("project proj_… on model m")
    block: int = 1  # units leased at a time (shared mode): a tenth of the capacity
    limit_header: bytes = b""  # the capacity, as the x-ratelimit-limit-* header says it
    budget: LedgerScope | None = None  # a budget's: what it counts in the usage ledger


def _specs(out: list[Spec], limits: LimitSet, prefix: str, scope: str, subject: str) -> None:
    for dim, value in zip(DIMENSIONS, limits.values(), strict=True):
        if value:
            rate = value / dim.period if dim.period else 0.0
            out.append(
                Spec(f"{prefix}:{dim.suffix}", dim.kind, value, rate, dim.label, dim.reason,
                     scope, subject, max(1, value // 10), str(value).encode())
            )  # fmt: skip


# --- budgets --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Budget:
    """One stored budget: a hard spend limit (``spend``, cents a month) or a token budget
    (``tokens``, a day or a month)."""

    kind: str  # "spend" | "tokens"
    period: str  # "day" | "month"
    amount: int  # cents (spend) or tokens

    @property
    def capacity(self) -> int:
        """The counter's capacity: spend in ``SPEND_UNIT``s, or tokens."""
        if self.kind == "spend":
            return self.amount * (PICODOLLARS_PER_CENT // SPEND_UNIT)
        return self.amount


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar day or month, UTC: ``[start, end)``."""

    name: str  # "day" | "month"
    label: str  # "2026-12-05" | "2026-12"
    start: datetime
    end: datetime
    ends_at: float  # ``end`` as Unix seconds


def period(name: str, now: float) -> Period:
    """The day or month (UTC) that Unix time ``now`` falls in."""
    at = datetime.fromtimestamp(now, UTC)
    if name == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        end, label = start + timedelta(days=1), start.strftime("%Y-%m-%d")
    else:
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        label = start.strftime("%Y-%m")
    return Period(name, label, start, end, end.timestamp())


@dataclass(frozen=True, slots=True)
class LedgerScope:
    """What a budget counts in the usage ledger (``usage_hourly``): one organization, or
    one project, API key or user of it, over one period."""

    organization_id: str
    column: str  # "" (the whole organization) | "project_id" | "api_key_id" | "user_id"
    subject: str  # that column's value ("" for the organization)
    period: Period


def budget_key(scope: LedgerScope, kind: str) -> str:
    """The counter's shared name: the scope, the kind and the period."""
    mark = "$" if kind == "spend" else "t"
    return f"b:{scope.subject or scope.organization_id}:{mark}:{scope.period.label}"


def _budget_specs(
    out: list[Spec],
    budgets: tuple[Budget, ...],
    organization_id: str,
    column: str,
    subject_id: str,
    scope: str,
    subject: str,
    periods: dict[str, Period],
    price: Price | None,
) -> None:
    for budget in budgets:
        spend = budget.kind == "spend"
        if spend and price is None:
            continue  # a model without a price costs nothing
        ledger = LedgerScope(organization_id, column, subject_id, periods[budget.period])
        capacity = budget.capacity
        if spend:
            label = f"the monthly hard spend limit (${budget.amount / 100:,.2f})"
        else:
            every = "daily" if budget.period == "day" else "monthly"
            label = f"the {every} token budget ({budget.amount} tokens)"
        out.append(
            Spec(budget_key(ledger, budget.kind), SPEND if spend else TOKEN_BUDGET, capacity,
                 0.0, label, "spend_limit" if spend else "token_budget", scope, subject,
                 max(1, capacity // 10), b"", ledger)
        )  # fmt: skip


@dataclass
class OrgRules:
    """One organization's definitions, as loaded (``functions.services.limits.store``)."""

    defaults: dict[str, LimitSet] = field(default_factory=dict)  # model →
    projects: dict[tuple[str, str], LimitSet] = field(default_factory=dict)  # (project, model)
    keys: dict[str, LimitSet] = field(default_factory=dict)  # API key ID →
    users: dict[str, LimitSet] = field(default_factory=dict)  # user ID →
    # API key ID → (its service account, the account's limits)
    service_accounts: dict[str, tuple[str, LimitSet]] = field(default_factory=dict)
    # (project ID, or "" for the organization's price, model) → its price
    prices: dict[tuple[str, str], Price] = field(default_factory=dict)
    # "" (the organization's) or a project, API key or user ID → its budgets
    budgets: dict[str, tuple[Budget, ...]] = field(default_factory=dict)
    failure_mode: str | None = None
    loaded_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    specs: tuple[Spec, ...]
    failure_mode: str  # "open" | "closed"
    tokens: bool  # whether a reservation is needed
    rules: OrgRules  # what it was made from (a reload makes new plans)
    price: Price | None = None  # the model's price for this project (the ledger's cost)
    budgets: tuple[Spec, ...] = ()  # the budget counters among ``specs``
    spend: bool = False  # whether a spend reservation is needed
    expires: float = math.inf  # Unix time its first budget period ends (then: a new plan)


def make_plan(
    rules: OrgRules,
    principal: Principal,
    model: str,
    *,
    guest: LimitSet | None,
    failure_mode: str,
    now: float,
) -> Plan:
    """The counters a call of ``principal`` to ``model`` must fit; ``now`` (Unix time)
    picks the budgets' periods."""
    out: list[Spec] = []
    project_id = principal.project_id
    own = rules.projects.get((project_id or "", model))
    default = rules.defaults.get(model)
    project = own.over(default) if own is not None else default
    if project is not None:
        _specs(out, project, f"p:{project_id}:{model}", "project",
               f"project {project_id} on model {model}")  # fmt: skip
    key_id = principal.api_key_id
    if key_id is not None:
        key = rules.keys.get(key_id)
        if key is not None:
            _specs(out, key, f"k:{key_id}", "api_key", f"API key {key_id}")
        account = rules.service_accounts.get(key_id)
        if account is not None:
            _specs(out, account[1], f"s:{account[0]}", "service_account",
                   f"service account {account[0]}")  # fmt: skip
    user_id = principal.user_id
    if user_id is not None:
        user = rules.users.get(user_id)
        org = principal.organization_id
        if user is not None:
            _specs(out, user, f"u:{org}:{user_id}", "user", f"user {user_id}")
        elif principal.is_guest and guest is not None:
            _specs(out, guest, f"u:{org}:{user_id}", "guest", f"guest user {user_id}")
    prices = rules.prices
    price = prices.get((project_id or "", model)) if prices else None
    if price is None and prices:
        price = prices.get(("", model))
    budgets: tuple[Spec, ...] = ()
    if rules.budgets:
        budgets = _plan_budgets(rules.budgets, principal, price, now)
        out += budgets
    specs = tuple(out)
    return Plan(
        specs,
        rules.failure_mode or failure_mode,
        any(s.kind != REQUESTS and s.kind != CONCURRENT for s in specs),
        rules,
        price,
        budgets,
        any(s.kind == SPEND for s in budgets),
        min((s.budget.period.ends_at for s in budgets if s.budget is not None), default=math.inf),
    )


def _plan_budgets(
    stored: dict[str, tuple[Budget, ...]], principal: Principal, price: Price | None, now: float
) -> tuple[Spec, ...]:
    """The budget counters of the organization, the project, the API key and the user."""
    periods = {"day": period("day", now), "month": period("month", now)}
    org = principal.organization_id
    out: list[Spec] = []
    for column, subject_id, scope, subject in (
        ("", "", "organization", f"organization {org}"),
        ("project_id", principal.project_id, "project", f"project {principal.project_id}"),
        ("api_key_id", principal.api_key_id, "api_key", f"API key {principal.api_key_id}"),
        ("user_id", principal.user_id, "user", f"user {principal.user_id}"),
    ):
        if subject_id is None:
            continue
        budgets = stored.get(subject_id)
        if budgets:
            _budget_specs(out, budgets, org, column, subject_id, scope, subject, periods, price)
    return tuple(out)
