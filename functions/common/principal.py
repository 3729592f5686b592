"""Who is calling: the result of authenticating a request, used by every area.

Resolution (API key or JWT → Principal) lives in ``functions.services.identity``; this leaf
module only describes the result so areas can depend on it without importing the
identity code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    # None means every model the project may use; otherwise only these model IDs.
    allowed_models: frozenset[str] | None = None
    is_guest: bool = False

    def may_use_model(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models
