"""Who owns stored conversations and responses, and what a caller may see.

A row belongs to a project and, when a user made it, to that user. Users see only their
own rows inside the project they act in; project keys and service accounts see every row
of their project. Everything else answers 404, never 403, so IDs of others leak nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from functions.common.errors import Forbidden
from functions.common.principal import Principal
from functions.services.identity import authenticate, require_project

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


async def owner_of(request: Request) -> Owner:
    """Authenticate the request and return the scope its stored objects live in."""
    return Owner.of(await authenticate(request))
