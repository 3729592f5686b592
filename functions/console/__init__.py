"""The `console` area: the web console at ``/console/``, a browser client of the public API
(administration and a playground). It serves static files only — the page calls the same
endpoints any SDK does, with the credential the user gives it — so it needs no service.

Front end: Preact with hooks and htm (tagged templates instead of JSX), vendored as the
npm packages' own ES modules (``vendor.json`` pins each file; ``scripts/vendor-console.py``
fetches and checks them): about 7 KB compressed, no build step, no runtime dependency
beyond the browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import Receive, Scope, Send

from functions.common import errors
from functions.common.routing import Operation, bind
from functions.console.assets import SECURITY_HEADERS, ConsoleAssets

__all__ = ["ROUTES", "ConsoleDeps", "routes"]


@dataclass(frozen=True, slots=True)
class ConsoleDeps:
    assets: ConsoleAssets = field(default_factory=ConsoleAssets)


def _serve(assets: ConsoleAssets, request: Request, name: str) -> Response:
    if request.method not in ("GET", "HEAD"):
        raise errors.MethodNotAllowed(
            f"Method {request.method} not allowed on {request.url.path}.",
            headers={"Allow": "GET, HEAD"},
        )
    asset = assets.get(name)
    if asset is None:
        raise errors.NotFound(f"No console file {request.url.path}.", code="unknown_url")
    headers = {
        **SECURITY_HEADERS,
        "ETag": asset.etag,
        # Not fingerprinted: revalidate each time (a 304 costs a few hundred bytes).
        "Cache-Control": "no-cache",
        "Vary": "Accept-Encoding",
    }
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        body = b""
    return Response(body, media_type=asset.media_type, headers=headers)


async def index(deps: ConsoleDeps, request: Request) -> Response:
    """
    summary: The web console (administration and playground) in the browser
    description: >-
      Jan extension. A page and its static files (under `/console/`), served with a
      Content-Security-Policy that allows this origin only. The console calls the public
      API with the credential given to it (an admin or project key, or a session from
      `/v1/auth/*`), kept in the tab's session storage.
    tags: [console]
    security: []
    responses:
      200: {description: HTML page.}
    """
    return _serve(deps.assets, request, "index.html")


ROUTES: list[Operation[ConsoleDeps]] = [Operation("GET", "/console/", index)]


class _Files:
    """The files under ``/console/`` (a Mount: undocumented, like Swagger UI's assets)."""

    def __init__(self, assets: ConsoleAssets) -> None:
        self.assets = assets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        name = scope["path"].removeprefix(scope.get("root_path", "")).lstrip("/")
        response = _serve(self.assets, request, name)
        await response(scope, receive, send)


def routes(deps: ConsoleDeps) -> list[BaseRoute]:
    """The documented page, then every file (``/console`` alone redirects to ``/console/``)."""
    return [*bind(ROUTES, deps), Mount("/console", app=_Files(deps.assets), name="console")]
