"""Who is calling: the result of authenticating a request, used by every area.

Resolution (API key or JWT → Principal) lives in ``functions.services.identity``; this leaf
module only describes the result so areas can depend on it without importing the
identity code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from functions.common.errors import Forbidden, InvalidRequest

PrincipalKind = Literal["user", "admin_key", "project_key", "service_account"]
OrgRole = Literal["owner", "reader"]
ProjectRole = Literal["owner", "member"]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    organization_id: str
    # The project the request acts in: a project key's own project, a service account's
    # project, or for a user the project named by the `OpenAI-Project` header, else the
    # user's default project. None for admin keys, and for a user acting at organization
    # level (only `OpenAI-Organization` named, or an archived default project).
    project_id: str | None
    user_id: str | None = None
    api_key_id: str | None = None
    org_role: OrgRole | None = None
    project_role: ProjectRole | None = None
    # The models this caller may use (O(1) checks, no query: both are resolved with the
    # principal, see ``model_grants``). ``allowed_models`` None means every model the
    # project's providers serve, less ``denied_models``; otherwise only these model IDs.
    allowed_models: frozenset[str] | None = None
    is_guest: bool = False
    denied_models: frozenset[str] = frozenset()
    # The project's data retention is zero_data_retention: no prompt or output is stored.
    zero_data_retention: bool = False
    # The project's scheduling priority (a Jan extension; vLLM's ``priority``: lower runs
    # first), forwarded to engines that declare they take it; None: the project has none.
    priority: int | None = None

    def may_use_model(self, model: str) -> bool:
        return (
            self.allowed_models is None or model in self.allowed_models
        ) and model not in self.denied_models


ModelPermissionMode = Literal["allow_list", "deny_list"]


def model_grants(
    key_models: Sequence[str] | None,
    mode: ModelPermissionMode | None,
    model_ids: Sequence[str] | None,
) -> tuple[frozenset[str] | None, frozenset[str]]:
    """``(allowed_models, denied_models)`` of a principal: the intersection of a key's own
    ``allowed_models`` (None: no limit of its own) and its project's model permissions
    (``mode`` None: the project has none). A deny list is kept as such only when nothing
    else bounds the models; otherwise it is taken out of the allowed set."""
    allowed = frozenset(key_models) if key_models is not None else None
    listed = frozenset(model_ids or ())
    if mode == "allow_list":
        return (listed if allowed is None else allowed & listed), frozenset()
    if mode == "deny_list":
        return (None, listed) if allowed is None else (allowed - listed, frozenset())
    return allowed, frozenset()


def require_project(principal: Principal) -> str:
    """The project a model-API request acts in; admin keys and project-less callers are
    refused."""
    if principal.kind == "admin_key":
        raise Forbidden(
            "Admin API keys work only on the Administration API (/v1/organization/…); "
            "use a project API key."
        )
    if principal.project_id is None:
        raise Forbidden(
            "No project selected: send an OpenAI-Project header naming a project you belong to."
        )
    return principal.project_id


def refuse_storing(principal: Principal, what: str, *, param: str | None = None) -> None:
    """400 when ``what`` would store prompts or outputs of a project under zero data
    retention."""
    if principal.zero_data_retention:
        raise InvalidRequest(
            f"{what} cannot be used: this project's data retention policy is "
            "zero_data_retention, so no prompt or output is stored.",
            param=param,
            code="zero_data_retention",
        )


def refuse_project_credentials(principal: Principal) -> None:
    """Project and service-account keys work only on the model APIs."""
    if principal.kind in ("project_key", "service_account"):
        raise Forbidden(
            "Project API keys cannot be used on the Administration API; use an admin key "
            "(sk-admin-…) or sign in as an organization owner."
        )


def require_admin(principal: Principal, *, write: bool) -> str:
    """The organization an Administration API request acts on; owners write, readers read.
    (Project-scoped admin endpoints also let a project's owners and members in: see
    ``functions.admin.call.project_call``.)"""
    refuse_project_credentials(principal)
    # An admin key carries its owner's current role (operator keys: owner), like a user.
    if principal.org_role == "owner":
        return principal.organization_id
    if principal.org_role == "reader" and not write:
        return principal.organization_id
    if principal.org_role == "reader" and principal.kind == "admin_key":
        raise Forbidden("This admin key's owner is an organization reader: the key can only read.")
    if principal.org_role == "reader":
        raise Forbidden("Organization readers cannot change anything; ask an owner.")
    raise Forbidden("You are not a member of this organization's administrators.")


# What an Owner sees, as the first three parameters of a query: `*owner.scope()`.
OWNED = "organization_id = $1 AND project_id = $2 AND ($3::text IS NULL OR user_id = $3)"


@dataclass(frozen=True, slots=True)
class Owner:
    organization_id: str
    project_id: str
    # Stamped on rows the caller creates.
    user_id: str | None
    api_key_id: str | None
    # The user whose rows the caller may see; None: every row of the project.
    visible_user_id: str | None
    principal: Principal

    @classmethod
    def of(cls, principal: Principal) -> Owner:
        project_id = require_project(principal)
        project_wide = principal.kind in ("project_key", "service_account")
        if not project_wide and principal.user_id is None:
            # Never widen a user's view to the whole project for want of an ID.
            raise Forbidden("These credentials cannot use stored conversations or responses.")
        return cls(
            organization_id=principal.organization_id,
            project_id=project_id,
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
            visible_user_id=None if project_wide else principal.user_id,
            principal=principal,
        )

    def scope(self) -> tuple[str, str, str | None]:
        """$1..$3 of an `OWNED` condition."""
        return self.organization_id, self.project_id, self.visible_user_id
