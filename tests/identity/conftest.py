"""Identity test helpers: a tiny app exposing the principal, over the real runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from functions.common import errors
from functions.common.http import JSON
from functions.common.routing import Operation, bind
from functions.common.runtime import Runtime
from functions.services.identity import Identity


async def _whoami(identity: Identity, request: Request) -> Response:
    principal = await identity.authenticate(request)
    data = asdict(principal)
    if principal.allowed_models is not None:
        data["allowed_models"] = sorted(principal.allowed_models)
    data["denied_models"] = sorted(principal.denied_models)
    return JSON(data)


@pytest.fixture
async def whoami(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app whose only route answers the resolved Principal."""
    identity = Identity(runtime)
    runtime.manage(identity)
    app = Starlette(
        routes=bind([Operation("GET", "/whoami", _whoami)], identity),
        exception_handlers={errors.APIError: errors.render},
    )
    await runtime.open()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
