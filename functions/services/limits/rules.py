"""What limits apply to a model call: the stored definitions of one organization, and the
plan they make for one caller and model (the counters to check, with their capacity).

Scopes, each a set of counters of its own:

- the project on the model (OpenAI's ``project.rate_limit``): the project's own values,
  field by field, else the organization's default for the model;
- the API key, the service account that owns the key, and the user (the caller's own
  user, or the user who owns the key), each over every model;
- a guest user with no limits of its own: the guest defaults from the settings.

A call must fit every counter of its plan. Counters are token buckets (capacity = the
limit, refilled continuously over the period, as OpenAI's limits are) except concurrent
requests, a count of calls in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import asyncpg

from functions.common.principal import Principal
from functions.services.pricing import Price

REQUESTS, TOKENS, CONCURRENT = 0, 1, 2


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


def _specs(out: list[Spec], limits: LimitSet, prefix: str, scope: str, subject: str) -> None:
    for dim, value in zip(DIMENSIONS, limits.values(), strict=True):
        if value:
            rate = value / dim.period if dim.period else 0.0
            out.append(
                Spec(f"{prefix}:{dim.suffix}", dim.kind, value, rate, dim.label, dim.reason,
                     scope, subject, max(1, value // 10), str(value).encode())
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
    failure_mode: str | None = None
    loaded_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    specs: tuple[Spec, ...]
    failure_mode: str  # "open" | "closed"
    tokens: bool  # whether a reservation is needed
    rules: OrgRules  # what it was made from (a reload makes new plans)
    price: Price | None = None  # the model's price for this project (the ledger's cost)


def make_plan(
    rules: OrgRules,
    principal: Principal,
    model: str,
    *,
    guest: LimitSet | None,
    failure_mode: str,
) -> Plan:
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
    specs = tuple(out)
    prices = rules.prices
    price = prices.get((project_id or "", model)) if prices else None
    if price is None and prices:
        price = prices.get(("", model))
    return Plan(
        specs,
        rules.failure_mode or failure_mode,
        any(s.kind == TOKENS for s in specs),
        rules,
        price,
    )
