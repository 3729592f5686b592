"""Route tables as plain data, bound to an area's dependencies when the app is built.

An area lists its operations (an OpenAPI word: a method on a path) once, as
``Operation(method, path, handler)`` where a handler
is ``async def handler(deps, request) -> Response`` and ``deps`` is the small typed object
of services the area uses (built once by ``functions.app``). ``bind`` turns the table into
Starlette routes for a running app; ``unbound`` turns it into routes that only describe
the API (paths, methods, docstrings), which is all the OpenAPI document needs, so the
document is built from the tables without building any service.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, compile_path
from starlette.types import Receive, Scope, Send

D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class Operation(Generic[D]):
    method: str
    path: str
    handler: Callable[[D, Request], Awaitable[Response]]
    # What the route matches, when it differs from the documented ``path`` (for example
    # ``{model:path}``: model names such as ``org/model`` contain slashes).
    match: str | None = None


@dataclass(frozen=True, slots=True)
class RawOperation(Generic[D]):
    """An endpoint that speaks ASGI itself (a streaming protocol such as MCP's)."""

    method: str
    path: str
    handler: Callable[[D, Scope, Receive, Send], Awaitable[None]]


Table = Iterable[Operation[D] | RawOperation[D]]


class _BoundASGI:
    __slots__ = ("deps", "handler")

    def __init__(self, handler: Callable[..., Awaitable[None]], deps: Any) -> None:
        self.handler = handler
        self.deps = deps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(self.deps, scope, receive, send)


def bind(table: Table[D], deps: D) -> list[BaseRoute]:
    """The table's routes, each handler given ``deps``."""
    routes: list[BaseRoute] = []
    for e in table:
        name = e.handler.__name__
        if isinstance(e, RawOperation):
            routes.append(Route(e.path, _BoundASGI(e.handler, deps), methods=[e.method], name=name))
        else:
            route = Route(e.path, functools.partial(e.handler, deps), methods=[e.method], name=name)
            if e.match is not None:
                route.path_regex, route.path_format, route.param_convertors = compile_path(e.match)
            routes.append(route)
    return routes


def unbound(table: Table[Any]) -> list[BaseRoute]:
    """The table as routes that describe it (for the OpenAPI document); never served."""
    return [Route(e.path, e.handler, methods=[e.method]) for e in table]
