"""The `admin` area: OpenAI's Administration API under `/v1/organization/*`.

Each resource module has its ``ROUTES``; this table concatenates them. The handlers get
``AdminDeps``: the runtime, identity (keys, revocation) and the model providers layer.
"""

from __future__ import annotations

from functions.admin import (
    admin_keys,
    audit_logs,
    budgets,
    data_retention,
    invites,
    model_aliases,
    model_fallbacks,
    model_permissions,
    prices,
    project_keys,
    project_priority,
    project_users,
    projects,
    providers,
    rate_limits,
    service_accounts,
    spend_alerts,
    usage,
    users,
)
from functions.admin.call import AdminDeps
from functions.common.routing import Operation

__all__ = ["ROUTES", "AdminDeps"]

ROUTES: list[Operation[AdminDeps]] = [
    *admin_keys.ROUTES,
    *users.ROUTES,
    *invites.ROUTES,
    *projects.ROUTES,
    *project_users.ROUTES,
    *service_accounts.ROUTES,
    *project_keys.ROUTES,
    *model_permissions.ROUTES,
    *model_aliases.ROUTES,
    *model_fallbacks.ROUTES,
    *providers.ROUTES,
    *usage.ROUTES,
    *rate_limits.ROUTES,
    *budgets.ROUTES,
    *prices.ROUTES,
    *spend_alerts.ROUTES,
    *audit_logs.ROUTES,
    *data_retention.ROUTES,
    *project_priority.ROUTES,
]
