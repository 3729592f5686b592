"""The `responses` area. Its routes arrive with the issue that builds it."""

from __future__ import annotations

from starlette.routing import BaseRoute

from functions.common.runtime import Runtime


def routes(runtime: Runtime) -> list[BaseRoute]:
    return []
