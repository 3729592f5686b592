"""The OpenAPI document covers every route; Swagger UI is served without a CDN."""

from __future__ import annotations

import httpx
from starlette.routing import Mount, Route

from functions.app import create_app, starlette_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings


async def test_every_route_is_documented(client: httpx.AsyncClient, runtime: Runtime) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    app = starlette_app(create_app(runtime))
    missing = []
    for route in app.routes:
        if isinstance(route, Mount):
            continue  # static assets
        assert isinstance(route, Route)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if method.lower() not in doc["paths"].get(route.path, {}):
                missing.append(f"{method} {route.path}")
    assert not missing, f"routes missing from the OpenAPI document: {missing}"


async def test_swagger_ui_and_assets_are_local(client: httpx.AsyncClient) -> None:
    page = await client.get("/api/swagger/index.html")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "http" not in page.text.split("<body>")[1].split("/openapi.json")[0]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        r = await client.get(f"/api/swagger/{asset}")
        assert r.status_code == 200 and len(r.content) > 1000, asset


async def test_one_area_serves_the_description_of_the_whole_api(settings: Settings) -> None:
    """In production each area is its own Service; /openapi.json is routed to one of them."""
    runtime = Runtime(settings.model_copy(update={"jan_function": "admin"}))
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        paths = (await c.get("/openapi.json")).json()["paths"]
    assert "/v1/organization/projects" in paths  # this area's own
    assert "/v1/chat/completions" in paths and "/v1/responses" in paths  # the others'
    served = {getattr(r, "path", "") for r in starlette_app(app).routes}
    assert "/v1/chat/completions" not in served  # yet it does not serve them
