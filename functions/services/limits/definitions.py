"""The administration side of rate limits and budgets: which models a project (or the
organization) can use, for the lists of limits; whether a budget is used up; and telling
this process's limiter about a change.

Other instances reload the definitions every ``JAN_RATE_LIMIT_REFRESH_SECONDS``; the
instance that made a change (an ``all`` process, or tests) applies it at once.

Which models: when this process serves models, the inference catalog's view (what the
router would resolve); a process that serves only ``admin`` has no catalog, and reads the
stored providers' discovered and declared models, plus the built-in provider's
``/models`` (polled at most once a minute, nothing when it does not answer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from functions.common.db import Executor
from functions.common.runtime import Runtime
from functions.services.limits import store
from functions.services.limits.rules import Budget, LedgerScope, budget_key, period
from functions.services.pricing import spend_units
from functions.services.providers.directory import DISCOVERY_ERRORS, Providers


class ModelCatalog(Protocol):
    """The models a scope can resolve (the inference catalog, where this process has it)."""

    def visible(self, organization_id: str, project_id: str | None) -> Mapping[str, object]: ...

    async def discover_on_demand(
        self, organization_id: str, project_id: str | None, *, missing_only: bool = False
    ) -> bool: ...


class BudgetCounters(Protocol):
    """What this process's limiter holds of a budget (where this process has one)."""

    def budget_remaining(self, key: str) -> float | None: ...


log = logging.getLogger(__name__)

BUILTIN_MODELS_SECONDS = 60.0


class RateLimitDefinitions:
    def __init__(self, runtime: Runtime, providers: Providers) -> None:
        self.runtime = runtime
        self.providers = providers
        self.catalog: ModelCatalog | None = None  # set when this process serves models
        self.counters: BudgetCounters | None = None  # likewise: its limiter
        self._subscribers: list[Callable[[str], None]] = []
        self._builtin: tuple[float, set[str]] = (-BUILTIN_MODELS_SECONDS, set())

    def subscribe(self, subscriber: Callable[[str], None]) -> None:
        """``subscriber(organization_id)`` is called after each change."""
        self._subscribers.append(subscriber)

    def changed(self, organization_id: str) -> None:
        for subscriber in self._subscribers:
            subscriber(organization_id)

    async def models(self, organization_id: str, project_id: str | None) -> set[str]:
        """The models a project can use; for ``project_id`` None, every model of the
        organization's providers (any project's) and the built-in ones."""
        stored: set[str] = set()
        if self.catalog is None or project_id is None:
            stored = await store.stored_models(
                self.runtime.db.writer, organization_id=organization_id, project_id=project_id
            )
        if self.catalog is not None:
            await self.catalog.discover_on_demand(organization_id, project_id, missing_only=True)
            return stored | set(self.catalog.visible(organization_id, project_id))
        return stored | await self._builtin_models()

    async def _builtin_models(self) -> set[str]:
        builtin = self.providers.builtin()
        if builtin is None:
            return set()
        at, models = self._builtin
        if time.monotonic() - at < BUILTIN_MODELS_SECONDS:
            return models
        try:
            listed = await self.providers.list_models(builtin.base_urls[0], builtin.headers)
        except DISCOVERY_ERRORS as exc:
            log.info("built-in models not listed", extra={"error": type(exc).__name__})
            listed = []
        models = {model for model, _ in listed}
        self._builtin = (time.monotonic(), models)
        return models

    async def reached(
        self,
        ex: Executor,
        *,
        organization_id: str,
        column: str,
        subject_id: str,
        budget: Budget,
        now: float | None = None,
    ) -> bool:
        """Whether a budget is used up in its current period: by what the usage ledger says
        its scope (``column`` "" for the organization) used, or by what this process's
        limiter holds of it."""
        scope = LedgerScope(
            organization_id,
            column,
            subject_id,
            period(budget.period, time.time() if now is None else now),
        )
        [(tokens, cost)] = await store.budget_usage(ex, [scope])
        used = spend_units(cost) if budget.kind == "spend" else tokens
        if used >= budget.capacity:
            return True
        if self.counters is None:
            return False
        left = self.counters.budget_remaining(budget_key(scope, budget.kind))
        return left is not None and left < 1
